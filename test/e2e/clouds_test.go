//go:build e2e

package e2e

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// TestOneOperatorServesTenantsOfTwoCloudsThroughPerCloudAuthorities runs the
// operator with --authority-host Public=…,USGovHigh=… against two emulator
// listeners, one per sign-in host, as a partner behind per-cloud proxies would:
// each tenant must reach its own cloud, since a request at the other cloud's host
// is answered with AADSTS900382.
func TestOneOperatorServesTenantsOfTwoCloudsThroughPerCloudAuthorities(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "default")
	const govResource = "https://api-gov.security.microsoft.us"
	gov := httptest.NewServer(s.emu.Cloud(v1alpha1.CloudUSGovHigh))
	t.Cleanup(gov.Close)
	publicTenant, govTenant := tenantID(0), tenantID(1)
	s.addConsentedTenant(publicTenant)
	s.emu.AddTenant(govTenant)
	s.emu.SetCloud(govTenant, v1alpha1.CloudUSGovHigh)
	s.emu.Grant(govTenant, sandboxClientID, govResource, grantedRoles...)

	const ns = "partner"
	s.createNamespace(t, ns)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	op := s.startOperator(t, "operator", "--authority-host", "Public="+s.emuURL+",USGovHigh="+gov.URL)
	s.createTenant(t, ns, "commercial", publicTenant)
	govDT := newTenant(ns, "gcc-high", govTenant, grantedRoles...)
	govDT.Spec.Cloud = v1alpha1.CloudUSGovHigh
	if err := s.admin.Create(context.Background(), govDT); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"commercial", "gcc-high"} {
		waitFor(t, 30*time.Second, name+" is Ready", func() error { return readyError(s.admin, ns, name) }, op)
	}
	for tenant, want := range map[string]int{publicTenant: 1, govTenant: 1} {
		if got := s.emu.Requests(tenant); got != want {
			t.Errorf("token requests of %s = %d, want %d", tenant, got, want)
		}
	}
	secret := tokenSecrets(t, s.admin, ns)["gcc-high-token"]
	if secret == nil {
		t.Fatal("gcc-high-token was not published")
	}
	if err := checkTokenSecret(secret, s.signingKeys(t), govTenant); err != nil {
		t.Error(err)
	}
	got := &v1alpha1.DefenderTenant{}
	if err := s.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "gcc-high"}, got); err != nil {
		t.Fatal(err)
	}
	if f := got.Status.LastFailure; f != nil {
		t.Errorf("gcc-high has lastFailure %+v after its only request succeeded", f)
	}
}
