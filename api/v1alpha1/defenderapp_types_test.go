package v1alpha1

import "testing"

func TestCredentialKindNamesTheCredentialThatIsSet(t *testing.T) {
	tests := []struct {
		name       string
		credential AppCredential
		want       CredentialKind
	}{
		{"client secret", AppCredential{ClientSecret: &ClientSecretCredential{}}, CredentialClientSecret},
		{"certificate", AppCredential{Certificate: &CertificateCredential{}}, CredentialCertificate},
		{"workload identity", AppCredential{WorkloadIdentity: &WorkloadIdentityCredential{}}, CredentialWorkloadIdentity},
		{"none", AppCredential{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.credential.Kind(); got != tt.want {
				t.Errorf("Kind() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBothAppKindsShareTheirSpecAndStatus(t *testing.T) {
	dapp := &DefenderApp{}
	cdapp := &ClusterDefenderApp{}
	for _, app := range []App{dapp, cdapp} {
		app.AppSpec().ClientID = "0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10"
		app.AppStatus().Credential = CredentialCertificate
	}
	if dapp.Spec.ClientID == "" || cdapp.Spec.ClientID == "" {
		t.Error("AppSpec() does not point into the app's spec")
	}
	if dapp.Status.Credential != CredentialCertificate || cdapp.Status.Credential != CredentialCertificate {
		t.Error("AppStatus() does not point at the app's status")
	}
}

func TestDefaults(t *testing.T) {
	if got := (&AppSpec{}).CloudOrDefault(); got != CloudPublic {
		t.Errorf("AppSpec.CloudOrDefault() = %q, want Public", got)
	}
	if got := (AppSecretKeyReference{}).KeyOrDefault(); got != DefaultClientSecretKey {
		t.Errorf("KeyOrDefault() = %q, want %q", got, DefaultClientSecretKey)
	}
	if got := (&WorkloadIdentityCredential{}).AudienceOrDefault(); got != "api://AzureADTokenExchange" {
		t.Errorf("AudienceOrDefault() = %q", got)
	}
	if got := (&AppReference{Name: "partner"}).KindOrDefault(); got != AppKindDefenderApp {
		t.Errorf("KindOrDefault() = %q, want DefenderApp", got)
	}
	if (&DefenderTenant{}).UsesApp() || !(&DefenderTenant{Spec: DefenderTenantSpec{AppRef: &AppReference{Name: "partner"}}}).UsesApp() {
		t.Error("UsesApp() does not follow spec.appRef")
	}
}
