//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	certutil "k8s.io/client-go/util/cert"
)

// writeServingCert writes a fresh certificate and key where --metrics-cert-path
// points, as a mounted kubernetes.io/tls Secret holds them, and returns the
// certificate's DER bytes.
func writeServingCert(t *testing.T, dir string) []byte {
	t.Helper()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("controller-manager-metrics-service.defender-tenant-operator-system.svc", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Write beside, then rename: the operator must never see half a file.
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	block, _ := pem.Decode(certPEM)
	return block.Bytes
}

// servedCert is the leaf certificate the metrics endpoint presents.
func servedCert(metricsURL string) ([]byte, error) {
	u, err := url.Parse(metricsURL)
	if err != nil {
		return nil, err
	}
	// The certificate is what is under test, not whom it names.
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("no certificate presented")
	}
	return certs[0].Raw, nil
}

func TestMetricsAreServedWithTheCertificateInMetricsCertPathAndItsRenewal(t *testing.T) {
	s := newSandbox(t, "default")
	dir := t.TempDir()
	first := writeServingCert(t, dir)
	op := s.startOperator(t, "operator", "--metrics-secure=true", "--metrics-cert-path="+dir)

	waitForServedCert(t, op, first, 10*time.Second, "the metrics endpoint presents the certificate from --metrics-cert-path")
	renewed := writeServingCert(t, dir)
	waitForServedCert(t, op, renewed, 30*time.Second, "the metrics endpoint presents the renewed certificate without a restart")
}

func waitForServedCert(t *testing.T, op *operator, want []byte, timeout time.Duration, what string) {
	t.Helper()
	waitFor(t, timeout, what, func() error {
		got, err := servedCert(op.metricsURL)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return errors.New("it presents another certificate")
		}
		return nil
	}, op)
}
