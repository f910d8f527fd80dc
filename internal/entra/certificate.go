package entra

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // the thumbprint Entra ID shows is SHA-1; it identifies, it does not protect
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// Why ParseCertificate refused a certificate. Its errors wrap exactly one of these,
// for errors.Is; all three are the InvalidCertificate reason. No error names or
// quotes key material.
var (
	// ErrCertificateUnparsable: tls.crt or tls.key is not PEM, or not a
	// certificate or a PKCS#1 or PKCS#8 private key.
	ErrCertificateUnparsable = errors.New("does not parse")
	// ErrCertificateKeyMismatch: tls.key is not the key of tls.crt's first
	// (leaf) certificate.
	ErrCertificateKeyMismatch = errors.New("key does not match the certificate")
	// ErrCertificateNotRSA: the certificate or the key is not RSA. Certificate
	// credentials are signed with PS256, which needs RSA.
	ErrCertificateNotRSA = errors.New("not RSA")
)

// AssertionLifetime is how long a signed client assertion is valid: what MSAL uses.
const AssertionLifetime = 10 * time.Minute

// Certificate is a certificate credential: the leaf certificate registered on the
// app registration and its RSA private key. Each token request sends a freshly
// signed client assertion. It prints as its thumbprint, never its key. It is
// immutable and safe for concurrent use.
type Certificate struct {
	leaf *x509.Certificate
	key  *rsa.PrivateKey
}

var _ Credential = (*Certificate)(nil)

// maxRSAKeyBits is the largest RSA key a certificate credential may have, the
// bound crypto/tls puts on the keys it verifies.
const maxRSAKeyBits = 8192

// ParseCertificate reads a certificate credential from a kubernetes.io/tls
// Secret's tls.crt (PEM certificates, leaf first) and tls.key (an unencrypted PEM
// RSA private key, PKCS#1 or PKCS#8). An expired or not yet valid certificate
// still parses: NotBefore and NotAfter say so. The error wraps
// ErrCertificateUnparsable, ErrCertificateKeyMismatch or ErrCertificateNotRSA.
func ParseCertificate(certPEM, keyPEM []byte) (*Certificate, error) {
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("tls.crt: the certificate's key is %s, %w: certificate credentials need an RSA certificate", leaf.PublicKeyAlgorithm, ErrCertificateNotRSA)
	}
	// Checked before the private key is parsed: validating, and later signing
	// with, a key of hundreds of thousands of bits costs the shared workers
	// seconds each time, and whoever writes the Secret chooses its size.
	if bits := pub.N.BitLen(); bits > maxRSAKeyBits {
		return nil, fmt.Errorf("tls.crt: the certificate's RSA key has %d bits, %w: at most %d are accepted", bits, ErrCertificateUnparsable, maxRSAKeyBits)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("tls.key: the private key is %s, %w: certificate credentials need the RSA key of the certificate", keyAlgorithm(key), ErrCertificateNotRSA)
	}
	if !pub.Equal(rsaKey.Public()) {
		return nil, fmt.Errorf("tls.key: the %w (the first certificate in tls.crt, the leaf, must be the key's)", ErrCertificateKeyMismatch)
	}
	return &Certificate{leaf: leaf, key: rsaKey}, nil
}

func parseCertificates(certPEM []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := certPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("tls.crt %w: PEM block %d is %q, want CERTIFICATE", ErrCertificateUnparsable, len(chain)+1, pemType(block))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			// A certificate is public: x509's reason may be quoted.
			return nil, fmt.Errorf("tls.crt %w: certificate %d: %w", ErrCertificateUnparsable, len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("tls.crt %w: it holds no PEM certificate", ErrCertificateUnparsable)
	}
	return chain, nil
}

// parsePrivateKey never quotes the parser's error: it describes the key's bytes.
func parsePrivateKey(keyPEM []byte) (any, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("tls.key %w: it holds no PEM block", ErrCertificateUnparsable)
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("tls.key %w: the key is encrypted; store it unencrypted, as kubernetes.io/tls Secrets do", ErrCertificateUnparsable)
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	if _, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return nil, fmt.Errorf("tls.key: the private key is ECDSA, %w: certificate credentials need an RSA key", ErrCertificateNotRSA)
	}
	return nil, fmt.Errorf("tls.key %w: PEM block %q is not a PKCS#1 or PKCS#8 private key", ErrCertificateUnparsable, pemType(block))
}

// keyAlgorithm names a key's type, never its value.
func keyAlgorithm(key any) string {
	switch key.(type) {
	case *ecdsa.PrivateKey:
		return "ECDSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PrivateKey:
		return "ECDH"
	default:
		return fmt.Sprintf("%T", key)
	}
}

// SHA1Thumbprint is the certificate's SHA-1 thumbprint in upper-case hex, as the
// Entra admin center lists it under Certificates & secrets.
func (c *Certificate) SHA1Thumbprint() string {
	sum := sha1.Sum(c.leaf.Raw) //nolint:gosec // see the import
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// SHA256Thumbprint is the base64url (unpadded) SHA-256 thumbprint of the DER
// certificate: the x5t#S256 header of the assertions it signs.
func (c *Certificate) SHA256Thumbprint() string {
	sum := sha256.Sum256(c.leaf.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NotBefore is when the leaf certificate becomes valid.
func (c *Certificate) NotBefore() time.Time { return c.leaf.NotBefore }

// NotAfter is when the leaf certificate expires.
func (c *Certificate) NotAfter() time.Time { return c.leaf.NotAfter }

// String describes the certificate by its thumbprint, for %v and %s.
func (c *Certificate) String() string {
	if c == nil || c.leaf == nil {
		return "<nil>"
	}
	return "certificate " + c.SHA1Thumbprint()
}

// GoString describes the certificate by its thumbprint, for %#v.
func (c *Certificate) GoString() string { return "entra.Certificate(" + c.String() + ")" }

func (c *Certificate) authParams(a assertionContext) (url.Values, error) {
	assertion, err := c.sign(a)
	if err != nil {
		return nil, err
	}
	return assertionParams(assertion), nil
}

// sign makes the client assertion of Microsoft's certificate-credentials format.
func (c *Certificate) sign(a assertionContext) (string, error) {
	if c == nil || c.key == nil || c.leaf == nil {
		return "", errors.New("no certificate")
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("x5t#S256", c.SHA256Thumbprint())
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.PS256, Key: c.key}, opts)
	if err != nil {
		return "", err
	}
	now := a.now
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:    a.clientID,
		Subject:   a.clientID,
		Audience:  jwt.Audience{a.tokenURL},
		ID:        string(uuid.NewUUID()),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(AssertionLifetime)),
	}).Serialize()
}

// pemType is a PEM block's type as an error may quote it: the header line is
// whatever the Secret holds, so a long one is cut rather than carried into a
// condition message.
func pemType(block *pem.Block) string {
	const most = 40
	if len(block.Type) <= most {
		return block.Type
	}
	return strings.ToValidUTF8(block.Type[:most], "") + "…"
}
