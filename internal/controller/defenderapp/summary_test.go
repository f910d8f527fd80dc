package defenderapp

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func summaryTenant(ready metav1.ConditionStatus, readyReason string, stalled metav1.ConditionStatus, stalledReason string, retiring bool) v1alpha1.DefenderTenant {
	var t v1alpha1.DefenderTenant
	if ready != "" {
		t.Status.Conditions = append(t.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: ready, Reason: readyReason})
	}
	if stalled != "" {
		t.Status.Conditions = append(t.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionStalled, Status: stalled, Reason: stalledReason})
	}
	if retiring {
		at := metav1.NewTime(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC))
		t.Status.ResourceRetiresAt = &at
	}
	return t
}

func TestSummariseCountsTenantsByState(t *testing.T) {
	const (
		yes = metav1.ConditionTrue
		no  = metav1.ConditionFalse
	)
	readyTenant := summaryTenant(yes, v1alpha1.ReasonTokenReady, "", "", false)
	tests := []struct {
		name    string
		tenants []v1alpha1.DefenderTenant
		want    v1alpha1.TenantsSummary
	}{
		{name: "no tenants", want: v1alpha1.TenantsSummary{}},
		{name: "ready tenants need no attention", tenants: []v1alpha1.DefenderTenant{readyTenant, readyTenant},
			want: v1alpha1.TenantsSummary{Total: 2, Ready: 2}},
		{name: "stalled tenants count under their Stalled reason", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(no, v1alpha1.ReasonConsentRequired, yes, v1alpha1.ReasonConsentRequired, false),
			summaryTenant(no, v1alpha1.ReasonConsentRequired, yes, v1alpha1.ReasonConsentRequired, false),
			summaryTenant(no, v1alpha1.ReasonMissingRoles, yes, v1alpha1.ReasonMissingRoles, false),
		}, want: v1alpha1.TenantsSummary{Total: 3, Stalled: 3, Reasons: map[string]int32{"ConsentRequired": 2, "MissingRoles": 1}}},
		{name: "a stalled tenant that still holds a valid token is Ready and counted under its Stalled reason", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(yes, v1alpha1.ReasonTokenReady, yes, v1alpha1.ReasonSecretWriteFailed, false),
		}, want: v1alpha1.TenantsSummary{Total: 1, Ready: 1, Stalled: 1, Reasons: map[string]int32{"SecretWriteFailed": 1}}},
		{name: "neither Ready nor Stalled counts under the Ready reason", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(no, v1alpha1.ReasonSuspended, "", "", false),
			summaryTenant(no, v1alpha1.ReasonTokenExpired, no, v1alpha1.ReasonConsentRequired, false),
			summaryTenant(no, v1alpha1.ReasonThrottled, "", "", false),
		}, want: v1alpha1.TenantsSummary{Total: 3, Reasons: map[string]int32{"Suspended": 1, "TokenExpired": 1, "Throttled": 1}}},
		{name: "progressing and brand-new tenants need no attention", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(no, v1alpha1.ReasonProgressing, "", "", false),
			summaryTenant("", "", "", "", false),
		}, want: v1alpha1.TenantsSummary{Total: 2}},
		{name: "reasons outside the contract are not counted", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(no, "Forged1", yes, "Forged2", false),
			summaryTenant(no, "Forged3", "", "", false),
		}, want: v1alpha1.TenantsSummary{Total: 2, Stalled: 1}},
		{name: "retiring resources are counted whatever the state", tenants: []v1alpha1.DefenderTenant{
			summaryTenant(yes, v1alpha1.ReasonTokenReady, "", "", true),
			summaryTenant(no, v1alpha1.ReasonMissingRoles, yes, v1alpha1.ReasonMissingRoles, true),
			readyTenant,
		}, want: v1alpha1.TenantsSummary{Total: 3, Ready: 2, Stalled: 1, RetiringResource: 2, Reasons: map[string]int32{"MissingRoles": 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarise(tt.tenants)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("summarise = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSameSummary(t *testing.T) {
	s := v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, Reasons: map[string]int32{"MissingRoles": 1, "Suspended": 1}}
	tests := []struct {
		name  string
		shown *v1alpha1.TenantsSummary
		same  bool
	}{
		{"none shown", nil, false},
		{"the same", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1}}, true},
		{"another total", &v1alpha1.TenantsSummary{Total: 4, Ready: 1, Stalled: 1, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1}}, false},
		{"another ready count", &v1alpha1.TenantsSummary{Total: 3, Ready: 2, Stalled: 1, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1}}, false},
		{"another stalled count", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 2, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1}}, false},
		{"another count of a reason", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, Reasons: map[string]int32{"Suspended": 2, "MissingRoles": 1}}, false},
		{"another reason", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, Reasons: map[string]int32{"Suspended": 1, "ConsentRequired": 1}}, false},
		{"a reason more", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1, "TokenExpired": 1}}, false},
		{"retiring differs", &v1alpha1.TenantsSummary{Total: 3, Ready: 1, Stalled: 1, RetiringResource: 1, Reasons: map[string]int32{"Suspended": 1, "MissingRoles": 1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameSummary(tt.shown, s); got != tt.same {
				t.Errorf("sameSummary = %v, want %v", got, tt.same)
			}
		})
	}
	if sameSummary(nil, v1alpha1.TenantsSummary{}) {
		t.Error("an app showing no summary has the empty one: its columns would stay blank")
	}
}

func TestSummaryPatchReplacesTheWholeSummary(t *testing.T) {
	shown := &v1alpha1.TenantsSummary{Total: 5, Ready: 2, Stalled: 2, RetiringResource: 3, Reasons: map[string]int32{"ConsentRequired": 2, "NotAReason": 1}}
	raw, err := summaryPatch(shown, v1alpha1.TenantsSummary{Total: 4, Ready: 3, Stalled: 1, Reasons: map[string]int32{"MissingRoles": 1}})
	if err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Status map[string]map[string]json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(raw, &patch); err != nil {
		t.Fatal(err)
	}
	if len(patch.Status) != 1 || patch.Status["tenants"] == nil {
		t.Fatalf("patch %s touches more of the status than status.tenants", raw)
	}
	tenants := patch.Status["tenants"]
	for field, want := range map[string]string{"total": "4", "ready": "3", "stalled": "1", "retiringResource": "null"} {
		if got := string(tenants[field]); got != want {
			t.Errorf("tenants.%s = %s, want %s", field, got, want)
		}
	}
	var reasons map[string]*int32
	if err := json.Unmarshal(tenants["reasons"], &reasons); err != nil {
		t.Fatal(err)
	}
	if n := reasons["MissingRoles"]; n == nil || *n != 1 {
		t.Errorf("reasons.MissingRoles = %v, want 1", n)
	}
	for _, gone := range []string{"ConsentRequired", "NotAReason", "Suspended"} {
		if n, ok := reasons[gone]; !ok || n != nil {
			t.Errorf("reasons.%s is not deleted (null) in %s", gone, raw)
		}
	}
	if len(reasons) > len(v1alpha1.ReasonKinds)+1 {
		t.Errorf("%d reasons in the patch, more than the contract's and the one shown", len(reasons))
	}

	raw, err = summaryPatch(shown, v1alpha1.TenantsSummary{Total: 1, Ready: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"reasons":null`) {
		t.Errorf("a summary without reasons keeps the app's: %s", raw)
	}
}
