package defendertenant

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
)

// forgeTokenSecret creates, as someone who may create but not read Secrets could,
// a Secret under the tenant's token Secret name that names the tenant as its
// controller: the UID of a DefenderTenant is visible to anyone who may read it.
func (h *harness) forgeTokenSecret(dt *v1alpha1.DefenderTenant, mutate func(*corev1.Secret)) *corev1.Secret {
	h.t.Helper()
	forged := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: "contoso-token", Namespace: h.ns,
			Annotations:     map[string]string{"replicator.example/replicate-to": "attacker-namespace"},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dt, v1alpha1.GroupVersion.WithKind(manager.TenantKind))},
		},
		Type: corev1.SecretTypeOpaque,
	}
	if mutate != nil {
		mutate(forged)
	}
	if err := k8s.Create(h.ctx, forged); err != nil {
		h.t.Fatal(err)
	}
	return forged
}

// setSuspend sets spec.suspend and reconciles.
func (h *harness) setSuspend(suspend bool) {
	h.t.Helper()
	h.updateTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend = suspend })
	h.reconcile()
}

func (h *harness) expectForgedSecretUntouched(forged *corev1.Secret, wantRequests int) {
	h.t.Helper()
	dt := h.tenant()
	expectCondition(h.t, dt, "Stalled", metav1.ConditionTrue, v1alpha1.ReasonSecretConflict)
	after := h.tokenSecret("contoso-token")
	if after == nil || after.ResourceVersion != forged.ResourceVersion || len(after.Data) != 0 {
		h.t.Error("the operator wrote into a Secret whose ownerReference was forged")
	}
	if n := h.entra.Requests(testTenantID); n != wantRequests {
		h.t.Errorf("token requests = %d, want %d while the token cannot be published", n, wantRequests)
	}
}

func TestForgedOwnerReferenceIsASecretConflict(t *testing.T) {
	requireControlPlane(t)
	immutable := true
	tests := []struct {
		name   string
		mutate func(*corev1.Secret)
	}{
		{"an Opaque Secret", nil},
		{"another type", func(s *corev1.Secret) { s.Type = "example.com/replicated" }},
		{"an immutable Secret", func(s *corev1.Secret) { s.Immutable = &immutable }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.createCredential(testClientSecret)
			dt := h.createTenant(func(dt *v1alpha1.DefenderTenant) { dt.Spec.Suspend = true })
			h.reconcile()
			forged := h.forgeTokenSecret(dt, tt.mutate)

			h.setSuspend(false)
			h.expectForgedSecretUntouched(forged, 0)
		})
	}
}

func TestSecretRecreatedByOthersAfterDeletionIsASecretConflict(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	dt := h.tenant()
	h.setSuspend(true)
	if err := k8s.Delete(h.ctx, h.tokenSecret("contoso-token")); err != nil {
		t.Fatal(err)
	}
	forged := h.forgeTokenSecret(dt, nil)

	h.setSuspend(false)
	h.expectForgedSecretUntouched(forged, 1)
}

func TestOwnershipOfTheTokenSecretSurvivesARestartAndARecreation(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	first := h.tokenSecret("contoso-token")
	if got := h.tenant().Status.TokenSecretUID; got != first.UID {
		t.Fatalf("status.tokenSecretUID = %q, want the created Secret's %q", got, first.UID)
	}

	// A new operator process restores a hand edit: the recorded UID, not memory, says the Secret is ours.
	h.r = h.newReconciler(h.r.Authorities)
	edited := first.DeepCopy()
	edited.Data[v1alpha1.TokenSecretKeyTokenType] = []byte("edited")
	if err := k8s.Update(h.ctx, edited); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	if got := string(h.tokenSecret("contoso-token").Data[v1alpha1.TokenSecretKeyTokenType]); got != "Bearer" {
		t.Errorf("token_type = %q after a restart, want the edit restored to Bearer", got)
	}

	if err := k8s.Delete(h.ctx, h.tokenSecret("contoso-token")); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	second := h.tokenSecret("contoso-token")
	if second == nil || second.UID == first.UID {
		t.Fatal("the deleted token Secret was not recreated")
	}
	if got := h.tenant().Status.TokenSecretUID; got != second.UID {
		t.Errorf("status.tokenSecretUID = %q, want the recreated Secret's %q", got, second.UID)
	}
}

// A token Secret published before UIDs were recorded has none in the status. It is
// adopted only when its inputs digest proves it was written with the credential.
func TestTokenSecretFromBeforeUIDsWereRecorded(t *testing.T) {
	requireControlPlane(t)
	forget := func(h *harness) {
		dt := h.tenant()
		dt.Status.TokenSecretUID = ""
		if err := k8s.Status().Update(h.ctx, dt); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("with the current inputs digest it is adopted", func(t *testing.T) {
		h := newHarness(t)
		h.publishToken()
		forget(h)
		h.reconcile()
		expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
		if got, want := h.tenant().Status.TokenSecretUID, h.tokenSecret("contoso-token").UID; got != want {
			t.Errorf("status.tokenSecretUID = %q, want the adopted Secret's %q", got, want)
		}
	})
	t.Run("without it it is a conflict", func(t *testing.T) {
		h := newHarness(t)
		h.createCredential(testClientSecret)
		dt := h.createTenant()
		forged := h.forgeTokenSecret(dt, func(s *corev1.Secret) {
			s.Annotations[v1alpha1.AnnotationInputsHash] = "0123456789abcdef0123456789abcdef"
		})
		h.reconcile()
		h.expectForgedSecretUntouched(forged, 0)
	})
}

// For an app's credential the inputs digest is computed from public data (the
// certificate's thumbprint, the ServiceAccount's UID, the app's UID), so a Secret
// from before UIDs were recorded is never adopted by its digest: a namespace editor
// could forge it and get the live token written into a Secret of their making.
func TestForgedInputsDigestIsNotAdoptedForAppCredentials(t *testing.T) {
	requireControlPlane(t)
	tests := []struct {
		name  string
		start func(h *harness)
	}{
		{"certificate", func(h *harness) {
			c := h.validCertificate()
			h.entra.AddCertificate(testClientID, c.cert)
			h.storeCertificate(h.crn, c)
			h.createClusterApp(certCredential())
		}},
		{"workload identity", func(h *harness) {
			h.createWorkloadSA()
			h.federate(h.workloadSubject())
			h.createClusterApp(federatedCredential())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.start(h)
			h.createAppTenant(v1alpha1.AppKindClusterDefenderApp, h.clusterAppName())
			dt := h.tenant()
			// The digest as anyone who can read the tenant, the app and the
			// credential's public part can compute it.
			obs, err := h.r.observe(h.ctx, dt)
			if err != nil {
				t.Fatal(err)
			}
			if obs.inputsHash == "" {
				t.Fatal("no inputs digest: the credential is not usable, and the test proves nothing")
			}
			forged := h.forgeTokenSecret(dt, func(s *corev1.Secret) {
				s.Labels = map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelTenant: tenantName}
				s.Annotations[v1alpha1.AnnotationInputsHash] = obs.inputsHash
			})
			h.reconcile()
			h.expectForgedSecretUntouched(forged, 0)
		})
	}
}

// An adopted Secret is rebuilt: what others put there before the operator vouched
// for it does not survive the adoption.
func TestAdoptedTokenSecretKeepsNoForeignMetadata(t *testing.T) {
	requireControlPlane(t)
	h := newHarness(t)
	h.publishToken()
	dt := h.tenant()
	dt.Status.TokenSecretUID = ""
	if err := k8s.Status().Update(h.ctx, dt); err != nil {
		t.Fatal(err)
	}
	s := h.tokenSecret("contoso-token")
	s.Labels["replicator.example/copy"] = "yes"
	s.Annotations["replicator.example/replicate-to"] = "attacker-namespace"
	s.OwnerReferences = append(s.OwnerReferences, metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "keeper", UID: "0d6f0000-0000-0000-0000-000000000001"})
	if err := k8s.Update(h.ctx, s); err != nil {
		t.Fatal(err)
	}

	h.reconcile()

	expectCondition(t, h.tenant(), "Ready", metav1.ConditionTrue, v1alpha1.ReasonTokenReady)
	adopted := h.tokenSecret("contoso-token")
	if got := h.tenant().Status.TokenSecretUID; got != adopted.UID {
		t.Fatalf("status.tokenSecretUID = %q, want the adopted Secret's %q", got, adopted.UID)
	}
	if _, ok := adopted.Labels["replicator.example/copy"]; ok {
		t.Error("a foreign label survived the adoption")
	}
	if _, ok := adopted.Annotations["replicator.example/replicate-to"]; ok {
		t.Error("a foreign annotation survived the adoption")
	}
	if len(adopted.OwnerReferences) != 1 || adopted.OwnerReferences[0].UID != dt.UID {
		t.Errorf("owner references = %+v, want the tenant's alone", adopted.OwnerReferences)
	}
}
