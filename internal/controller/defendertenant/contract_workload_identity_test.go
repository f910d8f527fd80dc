package defendertenant

import (
	"encoding/json"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func TestWorkloadIdentityAssertionLivesTenMinutes(t *testing.T) {
	h, log := newLoggedHarness(t)
	h.federate(h.workloadSubject())
	h.createWorkloadSA()
	h.createClusterApp(federatedCredential())
	h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
	h.reconcile()

	h.expectReady()
	sent := expectSent(t, log, 1)[0]
	jws, err := jose.ParseSignedCompact(sent.clientAssertion, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatalf("the client assertion sent is not a signed JWT: %v", err)
	}
	var claims struct {
		IssuedAt  int64 `json:"iat"`
		ExpiresAt int64 `json:"exp"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims.IssuedAt == 0 {
		t.Fatalf("no iat in the client assertion: %v", err)
	}
	if lifetime := claims.ExpiresAt - claims.IssuedAt; lifetime != 600 {
		t.Errorf("the ServiceAccount token sent as client assertion lives %d s (exp − iat), want 600 s", lifetime)
	}
}
