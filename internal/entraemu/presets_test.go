package entraemu_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// The presets of Entra's policy and cross-cloud answers send the bodies Entra
// sends: status, error, error_codes and, where Entra sends one, suberror.
func TestPolicyAndCrossCloudPresets(t *testing.T) {
	for _, tt := range []struct {
		name         string
		failure      entraemu.Failure
		wantError    string
		wantCode     int
		wantSuberror string
	}{
		{"cross cloud", entraemu.CrossCloud(), "invalid_request", 900382, ""},
		{"national cloud redirect", entraemu.NationalCloudRedirect(), "invalid_request", 90038, ""},
		{"conditional access", entraemu.ConditionalAccess(), "interaction_required", 53003, "message_only"},
		{"tenant restrictions", entraemu.TenantRestrictions(), "access_denied", 500021, ""},
		{"tenant blocked", entraemu.TenantBlocked(), "invalid_grant", 5000224, ""},
		{"app disabled", entraemu.AppDisabled(), "unauthorized_client", 7000112, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.emu.InjectFailures(tenantID, tt.failure)
			resp := f.post(t, v2Path(tenantID), creds("scope", xdrScope))
			if resp.status != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", resp.status)
			}
			assertEntraError(t, resp, tt.wantError, tt.wantCode)
			var body map[string]any
			if err := json.Unmarshal(resp.body, &body); err != nil {
				t.Fatal(err)
			}
			got, present := body["suberror"]
			switch {
			case tt.wantSuberror == "" && present:
				t.Errorf("suberror = %v, want none", got)
			case tt.wantSuberror != "" && got != tt.wantSuberror:
				t.Errorf("suberror = %v, want %q", got, tt.wantSuberror)
			}

			// The failure is answered once; the next request is served normally.
			if resp := f.post(t, v2Path(tenantID), creds("scope", xdrScope)); resp.status != http.StatusOK {
				t.Errorf("next request: status = %d, want 200", resp.status)
			}
		})
	}
}
