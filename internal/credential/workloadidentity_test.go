package credential

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

func nn(namespace, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: namespace, Name: name}
}

func TestWorkloadIdentityChecks(t *testing.T) {
	const otherAudience = "api://other"
	sa, operator := nn("ops", "partner-app"), nn("ops", "controller-manager")
	allowed := func(mutate func(*workloadIdentityFacts)) workloadIdentityFacts {
		f := workloadIdentityFacts{
			source: WorkloadIdentity{ServiceAccount: sa, Audience: v1alpha1.DefaultWorkloadIdentityAudience},
			exists: true, uid: "uid-1", labelled: true,
			allowedAudiences: DefaultWorkloadIdentityAudiences, operator: operator,
		}
		if mutate != nil {
			mutate(&f)
		}
		return f
	}
	for _, tt := range []struct {
		name      string
		facts     workloadIdentityFacts
		state     State
		inMessage []string
	}{
		{"labelled ServiceAccount, allowed audience", allowed(nil), Usable, nil},
		{"one of several allowed audiences", allowed(func(f *workloadIdentityFacts) {
			f.source.Audience, f.allowedAudiences = otherAudience, []string{v1alpha1.DefaultWorkloadIdentityAudience, otherAudience}
		}), Usable, nil},
		{"operator that is not a ServiceAccount", allowed(func(f *workloadIdentityFacts) { f.operator = types.NamespacedName{} }), Usable, nil},
		{"audience not allowed", allowed(func(f *workloadIdentityFacts) { f.source.Audience = "https://kubernetes.default.svc" }), ServiceAccountNotAllowed,
			[]string{`"https://kubernetes.default.svc"`, "--workload-identity-audiences: api://AzureADTokenExchange", "Use an allowed audience"}},
		{"audiences compare exactly", allowed(func(f *workloadIdentityFacts) { f.source.Audience = "api://azureadtokenexchange" }), ServiceAccountNotAllowed,
			[]string{"Use an allowed audience"}},
		{"the operator's own ServiceAccount", allowed(func(f *workloadIdentityFacts) { f.operator = sa }), ServiceAccountNotAllowed,
			[]string{`"partner-app"`, `namespace "ops"`, "the operator's own", "Use another ServiceAccount"}},
		{"the operator's own, missing and unlabelled: the choice is what to fix", allowed(func(f *workloadIdentityFacts) { f.operator, f.exists, f.labelled = sa, false, false }),
			ServiceAccountNotAllowed, []string{"Use another ServiceAccount"}},
		{"disallowed audience and missing ServiceAccount: the audience is what to fix", allowed(func(f *workloadIdentityFacts) { f.source.Audience, f.exists = otherAudience, false }),
			ServiceAccountNotAllowed, []string{"Use an allowed audience"}},
		{"missing ServiceAccount", allowed(func(f *workloadIdentityFacts) { f.exists, f.labelled = false, false }), ServiceAccountMissing, nil},
		{"unlabelled ServiceAccount", allowed(func(f *workloadIdentityFacts) { f.labelled = false }), ServiceAccountNotAllowed,
			[]string{`"partner-app"`, `namespace "ops"`, `defender.tenantcreds.io/workload-identity: "true"`, "kubectl -n ops label serviceaccount partner-app defender.tenantcreds.io/workload-identity=true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cred := checkWorkloadIdentity(tt.facts)
			if cred.State != tt.state {
				t.Errorf("state = %d, want %d (detail %q)", cred.State, tt.state, cred.Detail)
			}
			if cred.Source != tt.facts.source {
				t.Errorf("credential names %+v, want %+v", cred.Source, tt.facts.source)
			}
			for _, want := range tt.inMessage {
				if !strings.Contains(cred.Detail, want) {
					t.Errorf("detail %q does not mention %q", cred.Detail, want)
				}
			}
		})
	}
}

func TestServiceAccountOfUser(t *testing.T) {
	for user, want := range map[string]types.NamespacedName{
		"system:serviceaccount:defender-tenant-operator-system:defender-tenant-operator-controller-manager": nn("defender-tenant-operator-system", "defender-tenant-operator-controller-manager"),
		"system:serviceaccount:ops:":      {},
		"system:serviceaccount:ops":       {},
		"system:serviceaccount:ops:a:b":   {},
		"kubernetes-admin":                {},
		"system:serviceaccounts:ops:name": {},
	} {
		if got := serviceAccountOfUser(user); got != want {
			t.Errorf("serviceAccountOfUser(%q) = %q, want %q", user, got, want)
		}
	}
}

// The API server says who the operator is: the ServiceAccount its credentials
// authenticate as, and none for any other user.
