package defendertenant

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// These tests run against the manager started in TestMain, with real watches and the
// real clock: they prove that events in the cluster, not timers, drive the reaction.
const watchTimeout = 20 * time.Second

type watched struct {
	t        *testing.T
	ns       string
	tenantID string
}

func newWatched(t *testing.T) *watched {
	t.Helper()
	t.Parallel()
	return newWatchedIn(t)
}

// newWatchedIn is newWatched for one of several runs of a test, which are not
// parallel to each other.
func newWatchedIn(t *testing.T) *watched {
	t.Helper()
	w := &watched{t: t, ns: createNamespace(t), tenantID: string(uuid.NewUUID())}
	managerEntra.AddTenant(w.tenantID)
	managerEntra.Grant(w.tenantID, testClientID, defenderAPI, "Incident.Read.All", "AdvancedHunting.Read.All")
	return w
}

func (w *watched) createTenant() {
	w.t.Helper()
	dt := newTenant(w.ns, tenantName, func(dt *v1alpha1.DefenderTenant) {
		dt.Labels = map[string]string{managedLabel: "manager"}
		dt.Spec.TenantID = w.tenantID
	})
	if err := k8s.Create(w.t.Context(), dt); err != nil {
		w.t.Fatal(err)
	}
}

func (w *watched) tenant() *v1alpha1.DefenderTenant {
	w.t.Helper()
	dt := &v1alpha1.DefenderTenant{}
	if err := k8s.Get(w.t.Context(), keyOf(w.ns, tenantName), dt); err != nil {
		w.t.Fatal(err)
	}
	return dt
}

func (w *watched) waitForReason(conditionType, reason string) {
	w.t.Helper()
	eventually(w.t, watchTimeout, func() error {
		c := condition(w.tenant(), conditionType)
		if c == nil || c.Reason != reason {
			return fmt.Errorf("%s condition is %+v, want reason %s", conditionType, c, reason)
		}
		return nil
	})
}

func (w *watched) waitForToken(differentFrom string) string {
	w.t.Helper()
	var token string
	eventually(w.t, watchTimeout, func() error {
		s := getSecret(w.t, w.ns, "contoso-token")
		if s == nil {
			return errNotYet
		}
		token = string(s.Data["access_token"])
		if token == differentFrom {
			return fmt.Errorf("token Secret still holds the previous token")
		}
		return nil
	})
	return token
}

func TestWatchCredentialCreatedLaterMakesTenantReady(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	w.createTenant()
	w.waitForReason("Stalled", "CredentialsNotFound")

	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.waitForReason("Ready", "TokenReady")
	w.waitForToken("")
}

func TestWatchRotatedCredentialMintsNewToken(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	cred := createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.createTenant()
	first := w.waitForToken("")
	before := managerEntra.Requests(w.tenantID)

	// Rotation adds a second valid secret in Entra ID, then swaps the value in the cluster.
	managerEntra.SetAppSecrets(testClientID, entraemu.Secret{Value: testClientSecret}, entraemu.Secret{Value: "rotated-" + w.tenantID})
	cred.Data["client-secret"] = []byte("rotated-" + w.tenantID)
	if err := k8s.Update(t.Context(), cred); err != nil {
		t.Fatal(err)
	}
	w.waitForToken(first)
	if n := managerEntra.Requests(w.tenantID); n != before+1 {
		t.Errorf("token requests after rotation = %d, want %d", n, before+1)
	}
}

func TestWatchDeletedTokenSecretIsRecreated(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.createTenant()
	w.waitForToken("")
	s := getSecret(t, w.ns, "contoso-token")
	if err := k8s.Delete(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, watchTimeout, func() error {
		again := getSecret(t, w.ns, "contoso-token")
		if again == nil || again.UID == s.UID {
			return errNotYet
		}
		return nil
	})
}

func TestWatchHandEditedTokenSecretIsRestored(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.createTenant()
	w.waitForToken("")
	s := getSecret(t, w.ns, "contoso-token")
	want := string(s.Data["expires_at"])
	s.Data["expires_at"] = []byte("2099-01-01T00:00:00Z")
	if err := k8s.Update(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, watchTimeout, func() error {
		if got := string(getSecret(t, w.ns, "contoso-token").Data["expires_at"]); got != want {
			return fmt.Errorf("expires_at = %s, want %s", got, want)
		}
		return nil
	})
}

func TestWatchRemovedConflictingSecretUnblocksTenant(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	foreign := createCredentialIn(t, w.ns, "contoso-token", map[string][]byte{"unrelated": []byte("data")})
	w.createTenant()
	w.waitForReason("Stalled", "SecretConflict")

	if err := k8s.Delete(t.Context(), foreign); err != nil {
		t.Fatal(err)
	}
	w.waitForReason("Ready", "TokenReady")
}

func TestWatchEventsAreRecordedOnTransitions(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	w.createTenant()
	w.waitForReason("Stalled", "CredentialsNotFound")
	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.waitForReason("Ready", "TokenReady")

	eventually(t, watchTimeout, func() error {
		var list eventsv1.EventList
		if err := k8s.List(t.Context(), &list, client.InNamespace(w.ns)); err != nil {
			return err
		}
		seen := map[string]string{}
		for _, e := range list.Items {
			if e.Regarding.Kind == "DefenderTenant" && e.Regarding.Name == tenantName {
				seen[e.Reason] = e.Type
			}
		}
		if seen["CredentialsNotFound"] != corev1.EventTypeWarning || seen["TokenReady"] != corev1.EventTypeNormal {
			return fmt.Errorf("events by reason = %v", seen)
		}
		return nil
	})
}

func TestWatchStatusIsNotRewrittenWhileIdle(t *testing.T) {
	requireControlPlane(t)
	w := newWatched(t)
	createCredentialIn(t, w.ns, credentialName, map[string][]byte{"client-secret": []byte(testClientSecret)})
	w.createTenant()
	w.waitForReason("Ready", "TokenReady")
	w.waitForToken("")
	before := w.tenant().ResourceVersion
	requests := managerEntra.Requests(w.tenantID)

	// An unrelated change to the credential Secret's metadata wakes the tenant up.
	cred := getSecret(t, w.ns, credentialName)
	cred.Labels = map[string]string{"touched": "yes"}
	if err := k8s.Update(t.Context(), cred); err != nil {
		t.Fatal(err)
	}
	// Its reconcile reads the new version of the credential: the event was not ignored.
	eventually(t, watchTimeout, func() error {
		if !managerSecretReads.sawVersion(keyOf(w.ns, credentialName), cred.ResourceVersion) {
			return fmt.Errorf("no reconcile has read version %s of the credential Secret", cred.ResourceVersion)
		}
		return nil
	})
	// Two hand edits of the token Secret, each restored: reconciles of one tenant never
	// overlap, so the second restore starts after the reconcile of the label change,
	// status write included, has ended.
	for range 2 {
		w.editAndWaitForRestoredToken()
	}

	if after := w.tenant(); after.ResourceVersion != before {
		t.Errorf("status written although nothing changed: %+v", after.Status)
	}
	if n := managerEntra.Requests(w.tenantID); n != requests {
		t.Errorf("token requests = %d, want %d", n, requests)
	}
}

// editAndWaitForRestoredToken hand-edits the token Secret and waits until the
// operator has put it back: a reconcile of the tenant that started after the edit.
func (w *watched) editAndWaitForRestoredToken() {
	w.t.Helper()
	s := getSecret(w.t, w.ns, "contoso-token")
	want := string(s.Data["expires_at"])
	s.Data["expires_at"] = []byte("2099-01-01T00:00:00Z")
	if err := k8s.Update(w.t.Context(), s); err != nil {
		w.t.Fatal(err)
	}
	eventually(w.t, watchTimeout, func() error {
		if got := string(getSecret(w.t, w.ns, "contoso-token").Data["expires_at"]); got != want {
			return fmt.Errorf("expires_at = %s, want %s restored", got, want)
		}
		return nil
	})
}

func TestOwnTokenSecretUpdateWakesNoReconcileButOtherChangesDo(t *testing.T) {
	r := &Reconciler{}
	secret := func(rv string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "customer", Name: "contoso-token", ResourceVersion: rv}}
	}
	update := func(from, to string) event.UpdateEvent {
		return event.UpdateEvent{ObjectOld: secret(from), ObjectNew: secret(to)}
	}
	key := keyOf("customer", "contoso-token")

	if !r.notOwnTokenSecretWrite(update("1", "2")) {
		t.Error("an update this process did not make was dropped")
	}
	r.ownWrites.set(key, "2") // the operator updates the Secret it read at version 2
	if r.notOwnTokenSecretWrite(update("2", "3")) {
		t.Error("the update this process just made woke the tenant")
	}
	// The entry is used once: any later event of the Secret wakes the tenant.
	if !r.notOwnTokenSecretWrite(update("2", "3")) {
		t.Error("a second event was dropped: the entry must be used once")
	}
	r.ownWrites.set(key, "5")
	if !r.notOwnTokenSecretWrite(update("4", "5")) {
		t.Error("an edit that came before the operator's update was dropped")
	}
	if _, held := r.ownWrites.get(key); held {
		t.Error("the entry outlived the first Update event of the Secret")
	}
}
