package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
)

// The partner app of the demo's second part, as demo.yaml registers it.
const (
	demoClientID     = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
	demoObjectID     = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01"
	partnerTenantID  = "2f1b0c4d-7a6e-4b3c-9d8e-1f0a2b3c4d5e"
	contosoTenantID  = "6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11"
	fabrikamTenantID = "3f2b8c1d-5a4e-4b7f-8c2d-1e9a6b5c4d30"
	// clusterResourceNamespace is the operator's default: the demo runs it outside
	// a pod, so POD_NAMESPACE is unset.
	clusterResourceNamespace = "defender-tenant-operator-system"
	partnerAppName           = "partner"
	partnerCertSecret        = "partner-app-cert"
)

// partnerCertificateLifetime is what is left of the app's certificate when the demo
// starts: a day less than the renewBefore the tour turns rotation on with, so that
// its replacement is due at once.
const partnerCertificateLifetime = 29 * 24 * time.Hour

// newPartnerCertificate is the app's certificate credential: a self-signed RSA
// certificate, as `openssl req -x509` would make one, uploaded 61 days ago.
func newPartnerCertificate() (selfsigned.Certificate, error) {
	now := time.Now()
	return selfsigned.New("defender-tenant-operator demo partner app", now.AddDate(0, 0, -61), now.Add(partnerCertificateLifetime))
}

// emulatorConfigWith writes demo.yaml with the certificate registered on the demo
// app, as uploading it to the app registration does, and returns the file's path.
func emulatorConfigWith(dir string, cert selfsigned.Certificate) (string, error) {
	data, err := os.ReadFile(emulatorConfig)
	if err != nil {
		return "", err
	}
	cfg, err := entraemu.ParseConfig(data)
	if err != nil {
		return "", err
	}
	for i := range cfg.Apps {
		if cfg.Apps[i].ClientID == demoClientID {
			cfg.Apps[i].Certificates = append(cfg.Apps[i].Certificates, string(cert.CertPEM))
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "emulator.yaml")
	return path, os.WriteFile(path, out, 0o600)
}

// partnerApp shows a ClusterDefenderApp with a certificate credential: the key
// stays in the operator's namespace, and each customer namespace gets tokens for
// its own tenant only. fleetTour then puts customers on it.
func (d *demo) partnerApp(ctx context.Context, cert selfsigned.Certificate) error {
	step("A partner app defined once: a ClusterDefenderApp with a certificate (no shared secret)")
	if err := d.createNamespaces(ctx, append([]string{clusterResourceNamespace}, fleetNamespaces()...)...); err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: clusterResourceNamespace, Name: partnerCertSecret,
			// What lets the operator replace the certificate once rotation is on.
			Labels: map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelManagedCertificate: "true"},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert.CertPEM, corev1.TLSPrivateKeyKey: cert.KeyPEM},
	}
	if err := d.client.Create(ctx, secret); err != nil {
		return err
	}
	detail("certificate and key: Secret %s/%s (kubernetes.io/tls), in the operator's namespace only", clusterResourceNamespace, partnerCertSecret)
	var grants []v1alpha1.TenantGrant
	for _, ft := range append(fleet, woodgrove) {
		if ft.reason != v1alpha1.ReasonAppNotAllowed {
			grants = append(grants, v1alpha1.TenantGrant{Namespaces: []string{ft.namespace}, TenantIDs: []string{ft.tenantID}})
		}
	}
	app := &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: partnerAppName},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{
				ClientID:                demoClientID,
				Credential:              v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: partnerCertSecret}}},
				AdminConsentRedirectURI: "https://portal.azure.com",
			},
			TenantGrants: grants,
		},
	}
	if err := d.client.Create(ctx, app); err != nil {
		return err
	}
	if err := d.fleetTour(ctx); err != nil {
		return err
	}
	refused := &v1alpha1.DefenderTenant{}
	if err := d.client.Get(ctx, client.ObjectKey{Namespace: "customer-fabrikam", Name: "contoso-from-fabrikam"}, refused); err != nil {
		return err
	}
	step("A namespace asking for a tenant its grant does not cover")
	printProblem(refused)

	step("The app's status: what to register on the app registration")
	if err := d.client.Get(ctx, client.ObjectKey{Name: partnerAppName}, app); err != nil {
		return err
	}
	if c := app.Status.Certificate; c != nil {
		detail("sha1Thumbprint:   %s  (the portal lists the certificate by this)", c.SHA1Thumbprint)
		detail("sha256Thumbprint: %s  (the assertion's x5t#S256)", c.SHA256Thumbprint)
		if c.NotAfter != nil {
			detail("notAfter:         %s  (a Warning Event 30 days before)", c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	detail("Register the certificate (never the key) on the partner's app registration:")
	detail("  kubectl -n %s get secret %s -o jsonpath='{.data.tls\\.crt}' | base64 -d > partner-app.crt", clusterResourceNamespace, partnerCertSecret)
	detail("  az ad app credential reset --id %s --cert @partner-app.crt --append", demoClientID)
	return nil
}
