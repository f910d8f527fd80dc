package localcluster

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	jose "github.com/go-jose/go-jose/v4"
)

// serviceAccountSignerFile is where envtest keeps the certificate of the key
// kube-apiserver signs ServiceAccount tokens with.
const serviceAccountSignerFile = "sa-signer.crt"

// ServiceAccountKeys returns the key that verifies the control plane's
// ServiceAccount tokens, as kube-apiserver publishes it at /openid/v1/jwks. The
// envtest control plane serves no OIDC discovery (it has no external address), so an
// emulated Entra ID gets the issuer's keys from here instead.
func (c *Cluster) ServiceAccountKeys() (jose.JSONWebKeySet, error) {
	return ServiceAccountKeySet(filepath.Join(c.certDir, serviceAccountSignerFile))
}

// ServiceAccountKeySet reads a PEM certificate or public key and returns it as a
// JWKS keyed as kube-apiserver keys its tokens: the key ID is the unpadded
// base64url SHA-256 of the public key's PKIX DER.
func ServiceAccountKeySet(path string) (jose.JSONWebKeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("%s holds no PEM block", path)
	}
	var public any
	if cert, certErr := x509.ParseCertificate(block.Bytes); certErr == nil {
		public = cert.PublicKey
	} else if public, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		return jose.JSONWebKeySet{}, errors.Join(fmt.Errorf("%s is neither a certificate nor a public key", path), certErr, err)
	}
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	sum := sha256.Sum256(der)
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: public, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), Algorithm: string(signatureAlgorithm(public)), Use: "sig",
	}}}, nil
}

// signatureAlgorithm is what kube-apiserver signs with a key of this type.
func signatureAlgorithm(public any) jose.SignatureAlgorithm {
	if _, ok := public.(*ecdsa.PublicKey); ok {
		return jose.ES256
	}
	return jose.RS256
}
