package defendertenant

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/conditions"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
)

// eventsAPIRecorder records to the API server's events.k8s.io/v1 Events, as the
// manager's recorder does: the API server validates each Event, which a
// FakeRecorder never does.
func eventsAPIRecorder(t *testing.T) events.EventRecorder {
	t.Helper()
	clientset, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		t.Fatal(err)
	}
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: clientset.EventsV1()})
	ctx, cancel := context.WithCancel(context.Background())
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		broadcaster.Shutdown()
	})
	return broadcaster.NewRecorder(testScheme, "defender-tenant-operator")
}

// storedEvents lists the events.k8s.io/v1 Events of namespace ns about the object
// of this kind and UID.
func storedEvents(t *testing.T, ns, kind string, uid string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var about []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == kind && string(e.Regarding.UID) == uid {
			about = append(about, e)
		}
	}
	return about
}

func TestAppCertificateExpiringEventIsStoredByTheEventsAPI(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	c := newTestCertificate(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	h.storeCertificate(h.ns, c)
	h.createApp(certCredential())
	r := h.appReconciler(v1alpha1.AppKindDefenderApp, nil)
	r.Recorder = eventsAPIRecorder(t)
	h.reconcileApp(r)

	app := h.expectApp(v1alpha1.AppKindDefenderApp, v1alpha1.ReasonCredentialReady)
	var expiring eventsv1.Event
	eventually(t, watchTimeout, func() error {
		stored := storedEvents(t, h.ns, "DefenderApp", string(app.GetUID()))
		for _, e := range stored {
			if e.Reason == defenderapp.ReasonCertificateExpiring {
				expiring = e
				return nil
			}
		}
		return fmt.Errorf("%d Events about the app, none %s", len(stored), defenderapp.ReasonCertificateExpiring)
	})

	if expiring.Type != corev1.EventTypeWarning || expiring.Regarding.Name != appName || expiring.Regarding.Namespace != h.ns {
		t.Errorf("Event %s/%s regarding %s/%s, want a Warning regarding DefenderApp %s/%s",
			expiring.Type, expiring.Reason, expiring.Regarding.Namespace, expiring.Regarding.Name, h.ns, appName)
	}
	thumbprint := app.AppStatus().Certificate.SHA1Thumbprint
	if !strings.Contains(expiring.Note, thumbprint) || !strings.Contains(expiring.Note, conditions.RFC3339(c.cert.NotAfter)) {
		t.Errorf("note %q lacks the SHA-1 thumbprint %s or notAfter", expiring.Note, thumbprint)
	}
	expectNoKeyMaterial(t, app, []string{expiring.Note}, c)
}
