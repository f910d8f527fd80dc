package selfsigned

import (
	"crypto/rsa"
	"crypto/tls"
	"testing"
	"time"
)

func TestNewIsASelfSignedRSACertificateWithItsKey(t *testing.T) {
	notBefore, notAfter := time.Now().Add(-time.Hour).Truncate(time.Second), time.Now().AddDate(0, 0, 90).Truncate(time.Second)
	c, err := New("partner-app", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	// tls.X509KeyPair is what proves the key matches the certificate.
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatalf("the PEM is not a certificate and its key: %v", err)
	}
	if _, ok := pair.PrivateKey.(*rsa.PrivateKey); !ok {
		t.Errorf("key is %T, want RSA", pair.PrivateKey)
	}
	// Not a CA, so CheckSignatureFrom would refuse it as a parent.
	if err := c.Cert.CheckSignature(c.Cert.SignatureAlgorithm, c.Cert.RawTBSCertificate, c.Cert.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !c.Cert.NotBefore.Equal(notBefore) || !c.Cert.NotAfter.Equal(notAfter) || c.Cert.Subject.CommonName != "partner-app" {
		t.Errorf("certificate = %s %s–%s", c.Cert.Subject.CommonName, c.Cert.NotBefore, c.Cert.NotAfter)
	}
	other, err := New("partner-app", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	if other.Cert.SerialNumber.Cmp(c.Cert.SerialNumber) == 0 {
		t.Error("two certificates made together share a serial number")
	}
}
