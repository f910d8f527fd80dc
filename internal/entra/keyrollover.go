package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is the SHA-1 thumbprint Microsoft's proof sample sends
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// ProofAudience is the aud of the proof of possession that Graph's addKey and
// removeKey verify: Azure AD Graph's application ID, as Microsoft's sample and
// the Learn pages (application-addkey) give it; Microsoft Graph's own ID
// (00000003-…) is rejected, as a public report shows.
const ProofAudience = "00000002-0000-0000-c000-000000000000"

// ProofLifetime is exp - nbf of a proof: the most Microsoft accepts ("should not
// exceed 10 minutes").
const ProofLifetime = 10 * time.Minute

// GeneratedKeyBits is the size of the RSA keys the operator generates: what the
// Entra documentation asks of certificate credentials at least.
const GeneratedKeyBits = 2048

// GenerateCertificate makes a new RSA key and a self-signed certificate of it,
// valid from notBefore to notAfter, named CN=commonName. It returns the
// credential and its PEM forms for a kubernetes.io/tls Secret: tls.crt and
// tls.key (PKCS#8). The key never leaves the process except in keyPEM.
func GenerateCertificate(commonName string, notBefore, notAfter time.Time) (cert *Certificate, certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, GeneratedKeyBits)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generating an RSA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generating a serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating the certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parsing the new certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encoding the new key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return &Certificate{leaf: leaf, key: key}, certPEM, keyPEM, nil
}

// CertificatePEM is the leaf certificate in PEM: public, what a person uploads to
// the app registration.
func (c *Certificate) CertificatePEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.leaf.Raw}))
}

// certificateBase64 is the DER leaf in standard base64, keyCredential.key of addKey.
func (c *Certificate) certificateBase64() string {
	return base64.StdEncoding.EncodeToString(c.leaf.Raw)
}

// signProof signs the proof of possession for an addKey or removeKey on the
// application object objectID: RS256 with the x5t of the certificate, aud
// ProofAudience, iss the object ID, nbf now and exp ProofLifetime later, as
// Microsoft's sample makes it (application-rollkey-prooftoken).
func (c *Certificate) signProof(objectID string, now time.Time) (string, error) {
	if c == nil || c.key == nil || c.leaf == nil {
		return "", errors.New("no certificate")
	}
	sum := sha1.Sum(c.leaf.Raw) //nolint:gosec // see the import
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("x5t", base64.RawURLEncoding.EncodeToString(sum[:]))
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: c.key}, opts)
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Audience:  jwt.Audience{ProofAudience},
		Issuer:    objectID,
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(ProofLifetime)),
	}).Serialize()
}

// GraphHosts is where each cloud's Microsoft Graph calls go: a cloud it lists is
// sent to that host (a proxy or an emulator), any other to the cloud's Graph
// (GraphResource). The nil value sends every cloud to its real Graph.
type GraphHosts map[v1alpha1.Cloud]string

// Host is the Graph host for calls about an app of cloud; the empty cloud is Public.
func (g GraphHosts) Host(cloud v1alpha1.Cloud) string {
	if cloud == "" {
		cloud = v1alpha1.CloudPublic
	}
	if host, ok := g[cloud]; ok {
		return host
	}
	return GraphResource(cloud)
}

// String lists the overrides as CLOUD=URL in the contract's cloud order.
func (g GraphHosts) String() string {
	return Authorities(g).String()
}

// ParseGraphHosts parses --graph-host as ParseAuthorities parses --authority-host:
// one URL for every cloud, or CLOUD=URL entries separated by commas. Plain http is
// accepted only for loopback hosts, since a bearer token and a proof travel in
// each call.
func ParseGraphHosts(raw string) (GraphHosts, error) {
	hosts, err := parseCloudHosts(raw, parseGraphHost)
	return GraphHosts(hosts), err
}

func parseGraphHost(raw string) (string, error) {
	u, err := parseAbsoluteURL(raw)
	if err != nil {
		return "", fmt.Errorf("invalid Graph host %q: %w", raw, err)
	}
	if !secureOrLoopback(u) {
		return "", fmt.Errorf("invalid Graph host %q: use https (plain http only for loopback hosts)", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}
