package entraemu

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 section 4.1.7).
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// signingKey is the emulator's token signing key, ready to sign and to publish.
type signingKey struct {
	v1, v2 jose.Signer    // v1 tokens carry an x5t header, v2 tokens do not
	public *rsa.PublicKey // what Microsoft Graph checks the tokens it is handed with
	jwks   []byte         // the JSON Web Key Set of the discovery endpoints
}

// newSigningKey generates an RSA-2048 key. Entra publishes each signing key with a
// self-signed certificate and names it by the certificate's SHA-1 thumbprint, so the
// key gets one too and its kid equals its x5t, as in Entra's tokens.
func newSigningKey(now time.Time) (*signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating the signing key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.AddDate(5, 0, 0),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("creating the signing certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the signing certificate: %w", err)
	}
	thumbprint := sha1.Sum(der) //nolint:gosec // see the import
	kid := base64.RawURLEncoding.EncodeToString(thumbprint[:])

	signing := jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}
	v1, err := jose.NewSigner(signing, (&jose.SignerOptions{}).WithType("JWT").WithHeader("x5t", kid))
	if err != nil {
		return nil, fmt.Errorf("creating the v1 signer: %w", err)
	}
	v2, err := jose.NewSigner(signing, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("creating the v2 signer: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:                       &priv.PublicKey,
		KeyID:                     kid,
		Use:                       "sig",
		Certificates:              []*x509.Certificate{cert},
		CertificateThumbprintSHA1: thumbprint[:],
	}}})
	if err != nil {
		return nil, fmt.Errorf("encoding the key set: %w", err)
	}
	return &signingKey{v1: v1, v2: v2, public: &priv.PublicKey, jwks: jwks}, nil
}
