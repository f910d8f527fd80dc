package entra_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// The fixture's thumbprints, computed with openssl rather than Go:
//
//	openssl x509 -in testdata/fixture-cert.pem -noout -fingerprint -sha1
//	openssl x509 -in testdata/fixture-cert.pem -outform der | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='
//
// The fixture's key is a throwaway made for these tests (openssl req -x509
// -newkey rsa:2048 -nodes); it is registered nowhere.
const (
	fixtureSHA1   = "9861874920D9EEB5095BB75B1AAE6B1FB4866B73"
	fixtureSHA256 = "PUvLlRwBGTiImKRvtk8cnEPWY_80i2fPjVPlTLDo_fI"
)

var fixtureNotAfter = time.Date(2036, 11, 28, 13, 10, 7, 0, time.UTC)

func readFixture(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, err := os.ReadFile("testdata/fixture-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = os.ReadFile("testdata/fixture-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// rsaKeys are made once: RSA key generation is slow.
var rsaKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	keys := make([]*rsa.PrivateKey, 3)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[i] = k
	}
	return keys
})

// issue makes a certificate for pub, signed by parent's key (self-signed when
// parent is nil), valid from notBefore to notAfter.
func issue(t *testing.T, cn string, pub crypto.PublicKey, signer crypto.Signer, parent *x509.Certificate, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  parent == nil,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPEMOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func pkcs1PEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func pkcs8PEM(t *testing.T, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func sec1PEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// keyMaterial is what no error or printout may contain: every base64 line of the
// key's PEM body, and the private exponent and primes in decimal and hex.
func keyMaterial(keyPEM []byte, k *rsa.PrivateKey) []string {
	var out []string
	for line := range strings.SplitSeq(string(keyPEM), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	if k != nil {
		for _, n := range append([]*big.Int{k.D}, k.Primes...) {
			out = append(out, n.String(), n.Text(16), strings.ToUpper(n.Text(16)))
		}
	}
	return out
}

var certificateSentinels = []error{entra.ErrCertificateUnparsable, entra.ErrCertificateKeyMismatch, entra.ErrCertificateNotRSA}

func TestParseCertificate(t *testing.T) {
	keys := rsaKeys()
	leafKey, otherKey, caKey := keys[0], keys[1], keys[2]
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	year := 365 * 24 * time.Hour
	ca := issue(t, "test CA", caKey.Public(), caKey, nil, now.Add(-time.Hour), now.Add(2*year))
	leaf := issue(t, "partner app", leafKey.Public(), caKey, ca, now.Add(-time.Hour), now.Add(year))
	selfSigned := issue(t, "partner app", leafKey.Public(), leafKey, nil, now.Add(-time.Hour), now.Add(year))
	expired := issue(t, "partner app", leafKey.Public(), leafKey, nil, now.Add(-2*year), now.Add(-year))
	ecCert := issue(t, "partner app", ecKey.Public(), ecKey, nil, now.Add(-time.Hour), now.Add(year))
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: x509.MarshalPKCS1PrivateKey(leafKey)})
	garbage := []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
	// A certificate is public: anyone can issue one for a modulus of any size
	// without its private key, so no slow key generation is needed.
	huge := new(big.Int).Lsh(big.NewInt(1), 8192)
	huge.Add(huge, big.NewInt(1))
	hugeCert := issue(t, "partner app", &rsa.PublicKey{N: huge, E: 65537}, caKey, ca, now.Add(-time.Hour), now.Add(year))

	tests := []struct {
		name          string
		certPEM       []byte
		keyPEM        []byte
		wantErr       error // nil: parses
		wantLeaf      *x509.Certificate
		wantInMessage string
	}{
		{name: "RSA, PKCS#1 key", certPEM: certPEMOf(selfSigned), keyPEM: pkcs1PEM(leafKey), wantLeaf: selfSigned},
		{name: "RSA, PKCS#8 key", certPEM: certPEMOf(selfSigned), keyPEM: pkcs8PEM(t, leafKey), wantLeaf: selfSigned},
		{name: "chain with the leaf first", certPEM: certPEMOf(leaf, ca), keyPEM: pkcs1PEM(leafKey), wantLeaf: leaf},
		{name: "expired certificate still parses", certPEM: certPEMOf(expired), keyPEM: pkcs1PEM(leafKey), wantLeaf: expired},
		{name: "chain with the CA first", certPEM: certPEMOf(ca, leaf), keyPEM: pkcs1PEM(leafKey), wantErr: entra.ErrCertificateKeyMismatch, wantInMessage: "leaf"},
		{name: "key of another certificate", certPEM: certPEMOf(selfSigned), keyPEM: pkcs8PEM(t, otherKey), wantErr: entra.ErrCertificateKeyMismatch, wantInMessage: "does not match"},
		{name: "ECDSA certificate and key", certPEM: certPEMOf(ecCert), keyPEM: sec1PEM(t, ecKey), wantErr: entra.ErrCertificateNotRSA, wantInMessage: "ECDSA"},
		{name: "ECDSA certificate, PKCS#8 key", certPEM: certPEMOf(ecCert), keyPEM: pkcs8PEM(t, ecKey), wantErr: entra.ErrCertificateNotRSA, wantInMessage: "RSA"},
		{name: "RSA certificate, ECDSA key", certPEM: certPEMOf(selfSigned), keyPEM: pkcs8PEM(t, ecKey), wantErr: entra.ErrCertificateNotRSA, wantInMessage: "ECDSA"},
		{name: "garbage certificate", certPEM: garbage, keyPEM: pkcs1PEM(leafKey), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.crt"},
		{name: "certificate that is not PEM", certPEM: []byte("hello"), keyPEM: pkcs1PEM(leafKey), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.crt"},
		{name: "empty certificate", certPEM: nil, keyPEM: pkcs1PEM(leafKey), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.crt"},
		{name: "key where the certificate belongs", certPEM: pkcs1PEM(leafKey), keyPEM: pkcs1PEM(leafKey), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "RSA PRIVATE KEY"},
		{name: "garbage key", certPEM: certPEMOf(selfSigned), keyPEM: []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwgcmVhbGx5\n-----END PRIVATE KEY-----\n"), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.key"},
		{name: "key that is not PEM", certPEM: certPEMOf(selfSigned), keyPEM: x509.MarshalPKCS1PrivateKey(leafKey), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.key"},
		{name: "certificate where the key belongs", certPEM: certPEMOf(selfSigned), keyPEM: certPEMOf(selfSigned), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "tls.key"},
		// The size is refused before the key is read: this key is not even parsable.
		{name: "RSA key over 8192 bits", certPEM: certPEMOf(hugeCert), keyPEM: []byte("not a key"), wantErr: entra.ErrCertificateUnparsable, wantInMessage: "8193 bits"},
		{name: "encrypted key", certPEM: certPEMOf(selfSigned), keyPEM: encrypted, wantErr: entra.ErrCertificateUnparsable, wantInMessage: "encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := entra.ParseCertificate(tt.certPEM, tt.keyPEM)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseCertificate: %v", err)
				}
				if c.NotAfter() != tt.wantLeaf.NotAfter || c.NotBefore() != tt.wantLeaf.NotBefore {
					t.Errorf("NotBefore, NotAfter = %v, %v; want the leaf's %v, %v", c.NotBefore(), c.NotAfter(), tt.wantLeaf.NotBefore, tt.wantLeaf.NotAfter)
				}
				if want := independentSHA1(tt.wantLeaf.Raw); c.SHA1Thumbprint() != want {
					t.Errorf("SHA1Thumbprint = %s, want the leaf's %s", c.SHA1Thumbprint(), want)
				}
				return
			}
			if c != nil || err == nil {
				t.Fatalf("ParseCertificate = %v, %v; want an error", c, err)
			}
			for _, sentinel := range certificateSentinels {
				if got, want := errors.Is(err, sentinel), errors.Is(tt.wantErr, sentinel); got != want {
					t.Errorf("errors.Is(%q, %q) = %v, want %v", err, sentinel, got, want)
				}
			}
			if !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Errorf("error %q does not contain %q", err, tt.wantInMessage)
			}
			for _, m := range append(keyMaterial(tt.keyPEM, leafKey), keyMaterial(tt.certPEM, otherKey)...) {
				if strings.Contains(err.Error(), m) {
					t.Errorf("error %q contains key material %q", err, m)
				}
			}
		})
	}
}

// independentSHA1 formats the thumbprint differently from the package (%X), so
// that a wrong case or a separator shows.
func independentSHA1(der []byte) string {
	return fmt.Sprintf("%X", sha1.Sum(der))
}

func TestCertificateThumbprintsMatchOpenSSL(t *testing.T) {
	certPEM, keyPEM := readFixture(t)
	c, err := entra.ParseCertificate(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SHA1Thumbprint(); got != fixtureSHA1 {
		t.Errorf("SHA1Thumbprint = %s, want %s", got, fixtureSHA1)
	}
	if got := c.SHA256Thumbprint(); got != fixtureSHA256 {
		t.Errorf("SHA256Thumbprint = %s, want %s", got, fixtureSHA256)
	}
	if !c.NotAfter().Equal(fixtureNotAfter) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter(), fixtureNotAfter)
	}
}
