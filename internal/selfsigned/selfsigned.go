// Package selfsigned makes the certificate credential of an Entra ID app
// registration the way `openssl req -x509 -newkey rsa:2048` does: a self-signed
// RSA certificate and its key, in the PEM a kubernetes.io/tls Secret holds. The
// demo, the benchmark and the tests use it; production certificates come from the
// partner's own PKI or cert-manager.
package selfsigned

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"
)

// Certificate is a self-signed certificate, parsed and in PEM, and its key in PEM.
type Certificate struct {
	Cert    *x509.Certificate
	CertPEM []byte // tls.crt
	KeyPEM  []byte // tls.key, PKCS #1
}

// New makes a certificate for commonName, valid from notBefore to notAfter, with a
// fresh 2048-bit RSA key: the smallest size Entra ID accepts.
func New(commonName string, notBefore, notAfter time.Time) (Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Certificate{}, err
	}
	// A random serial: two certificates made in the same instant must still differ
	// as a rotation does.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return Certificate{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Certificate{}, err
	}
	return Certificate{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}, nil
}
