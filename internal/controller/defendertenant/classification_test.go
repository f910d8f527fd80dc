package defendertenant

import (
	"net/http"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// Entra's policy, cross-cloud and unrecognised refusals stall the tenant with the
// contract's reason, through the real API server: none of them is retried as a
// transient failure, and lastFailure keeps the code support knows them by.
func TestRefusalsAreClassifiedAndStall(t *testing.T) {
	requireControlPlane(t)
	for _, tt := range []struct {
		name        string
		failure     entraemu.Failure
		wantReason  string
		wantCode    string
		wantMessage []string
	}{
		{
			name: "cross-cloud 900382", failure: entraemu.CrossCloud(),
			wantReason: v1alpha1.ReasonTenantNotFound, wantCode: "AADSTS900382",
			wantMessage: []string{"commercial", "Azure Government", "spec.cloud"},
		},
		{
			name: "national cloud 90038", failure: entraemu.NationalCloudRedirect(),
			wantReason: v1alpha1.ReasonTenantNotFound, wantCode: "AADSTS90038",
			wantMessage: []string{"Azure Government"},
		},
		{
			name: "conditional access 53003", failure: entraemu.ConditionalAccess(),
			wantReason: v1alpha1.ReasonAccessBlocked, wantCode: "AADSTS53003",
			wantMessage: []string{"Conditional Access"},
		},
		{
			name: "tenant restrictions 500021", failure: entraemu.TenantRestrictions(),
			wantReason: v1alpha1.ReasonAccessBlocked, wantCode: "AADSTS500021",
			wantMessage: []string{"Restrict-Access-To-Tenants"},
		},
		{
			name: "tenant blocked 5000224", failure: entraemu.TenantBlocked(),
			wantReason: v1alpha1.ReasonAccessBlocked, wantCode: "AADSTS5000224",
			wantMessage: []string{"Microsoft support"},
		},
		{
			name: "app disabled 7000112", failure: entraemu.AppDisabled(),
			wantReason: v1alpha1.ReasonAccessBlocked, wantCode: "AADSTS7000112",
			wantMessage: []string{"disabled"},
		},
		{
			name: "unrecognised 400",
			failure: entraemu.Failure{Status: http.StatusBadRequest, Error: "invalid_request", Code: 50011,
				Description: "The redirect URI specified in the request does not match."},
			wantReason: v1alpha1.ReasonTokenRequestRejected, wantCode: "AADSTS50011",
			wantMessage: []string{"AADSTS50011", "HTTP 400", "redirect URI specified in the request does not match"},
		},
		{
			name:       "404 without a body",
			failure:    entraemu.Failure{Status: http.StatusNotFound},
			wantReason: v1alpha1.ReasonTokenRequestRejected, wantCode: "HTTP 404",
			wantMessage: []string{"HTTP 404"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.startFailing(tt.failure)

			dt := h.tenant()
			expectCondition(t, dt, "Stalled", metav1.ConditionTrue, tt.wantReason)
			expectCondition(t, dt, "Ready", metav1.ConditionFalse, tt.wantReason)
			if c := condition(dt, "Reconciling"); c != nil && c.Status == metav1.ConditionTrue {
				t.Errorf("Reconciling = True/%s, want not reconciling: a refusal is not transient", c.Reason)
			}
			if c := condition(dt, "Stalled"); c != nil {
				for _, s := range tt.wantMessage {
					if !strings.Contains(c.Message, s) {
						t.Errorf("Stalled message %q does not contain %q", c.Message, s)
					}
				}
			}
			last := dt.Status.LastFailure
			if last == nil {
				t.Fatal("status.lastFailure absent after a refused request")
			}
			if last.Reason != tt.wantReason || last.Code != tt.wantCode {
				t.Errorf("lastFailure reason/code = %s/%s, want %s/%s", last.Reason, last.Code, tt.wantReason, tt.wantCode)
			}
		})
	}
}

// A 408 is the endpoint, or a proxy in front of it, timing out: retried as transient.
func TestRequestTimeoutIsTransient(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.startFailing(entraemu.Failure{Status: http.StatusRequestTimeout, Body: "Request Timeout"})

	dt := h.tenant()
	expectCondition(t, dt, "Reconciling", metav1.ConditionTrue, v1alpha1.ReasonTokenEndpointUnavailable)
	if c := condition(dt, "Stalled"); c != nil && c.Status == metav1.ConditionTrue {
		t.Errorf("Stalled = True/%s, want not stalled", c.Reason)
	}
	if last := dt.Status.LastFailure; last == nil || last.Code != "HTTP 408" {
		t.Errorf("lastFailure = %+v, want code HTTP 408", last)
	}
}
