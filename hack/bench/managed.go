package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

const (
	// The app registration as Microsoft Graph knows it (-managed-rotation).
	appObjectID  = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01"
	homeTenantID = "2f1b0c4d-7a6e-4b3c-9d8e-1f0a2b3c4d5e"
	// The managed rotation's parameters: API.md's example. The bench's
	// certificates live managedCertificateLifetime, inside renewBefore, so the
	// rotation starts as soon as the app is put under it.
	managedValidity            = 2160 * time.Hour
	managedRenewBefore         = 720 * time.Hour
	managedCertificateLifetime = 480 * time.Hour
)

// managedRotation puts the app's certificate, already inside renewBefore, under
// managed rotation (the Secret is adopted as it is) and measures what the
// operator's own rotation costs: from the promotion (tls.crt replaced in the
// Secret), the most token requests of the customer tenants in any one second, the
// time until every tenant holds a token minted after it, and every transition of
// a tenant away from Ready=True from the spec change to the end.
func (b *bench) managedRotation(ctx context.Context) error {
	progress("putting the app's certificate under managed rotation (replication delay %s)", b.ReplicationDelay)
	b.emu.SetReplicationDelay(b.ReplicationDelay)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	w, err := watchRotation(watchCtx, b.cfg, b.cl.Scheme(), b.run)
	if err != nil {
		return err
	}
	secretKey := client.ObjectKey{Namespace: clusterResourceNS, Name: certSecretName}
	secret := &corev1.Secret{}
	if err := b.cl.Get(ctx, secretKey, secret); err != nil {
		return err
	}
	replaced := secret.Data[corev1.TLSCertKey]
	customerRequests := func() int { return b.emu.TotalRequests() - b.emu.Requests(homeTenantID) }
	homeBefore := b.emu.Requests(homeTenantID)
	var promoted time.Time
	if err := b.window(ctx, "managed_rotation", func() error {
		samples := newTokenSampler(customerRequests)
		defer samples.stop()
		before := customerRequests()
		start := time.Now()
		if err := b.putUnderRotation(ctx); err != nil {
			return err
		}
		// The promotion is the Secret update that replaces tls.crt; it is looked
		// for every 100 ms.
		for {
			if err := b.cl.Get(ctx, secretKey, secret); err != nil {
				return err
			}
			if !bytes.Equal(secret.Data[corev1.TLSCertKey], replaced) {
				promoted = time.Now()
				break
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return fmt.Errorf("the app's certificate was not promoted: %w", err)
			}
		}
		progress("promoted %.1f s after the app was put under rotation", promoted.Sub(start).Seconds())
		// Nothing mints in the minute before the promotion (the spec change and the
		// next key's Secret update re-mint no tenant: remint_token_requests, counted
		// from the spec change, tells), so a lastRefreshTime from the second before
		// the promotion was seen on is a token minted after it. Status times have
		// whole seconds, and the promotion is seen up to a poll and a read late.
		allAt, err := w.waitMintedSince(ctx, promoted.Add(-time.Second).Truncate(time.Second), b.N)
		if err != nil {
			return err
		}
		if _, err := b.op.waitQuiet(ctx, 0); err != nil {
			return err
		}
		worst := samples.maxPerSecond()
		b.out.add("managed_rotation_promoted_after_seconds", "%.2f", promoted.Sub(start).Seconds())
		b.out.add("managed_rotation_remint_seconds", "%.2f", allAt.Sub(promoted).Seconds())
		b.out.add("managed_rotation_remint_token_requests", "%d", customerRequests()-before)
		b.out.add("managed_rotation_max_per_second", "%d", worst)
		b.out.add("managed_rotation_max_percent_of_n", "%.1f", 100*float64(worst)/float64(b.N))
		return nil
	}); err != nil {
		return err
	}
	b.out.add("managed_rotation_home_tenant_token_requests", "%d", b.emu.Requests(homeTenantID)-homeBefore)
	lost, ready := w.counts()
	b.out.add("managed_rotation_ready_lost", "%d", lost)
	b.out.add("managed_rotation_ready_after", "%d", ready)
	app := &v1alpha1.ClusterDefenderApp{}
	if err := b.cl.Get(ctx, client.ObjectKey{Name: appName}, app); err != nil {
		return err
	}
	phase := ""
	if r := app.Status.Rotation; r != nil {
		phase = string(r.Phase)
	}
	b.out.add("managed_rotation_app_phase", "%s", phase)
	b.out.add("managed_rotation_app_ready", "%t", meta.IsStatusConditionTrue(app.Status.Conditions, v1alpha1.ConditionReady))
	return nil
}

// putUnderRotation adds the rotation to the app's certificate credential.
func (b *bench) putUnderRotation(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := b.cl.Get(ctx, client.ObjectKey{Name: appName}, app); err != nil {
			return err
		}
		app.Spec.Credential.Certificate.Rotation = &v1alpha1.CertificateRotation{
			ApplicationObjectID: appObjectID,
			HomeTenantID:        homeTenantID,
			Validity:            &metav1.Duration{Duration: managedValidity},
			RenewBefore:         &metav1.Duration{Duration: managedRenewBefore},
		}
		return b.cl.Update(ctx, app)
	})
}

// rotationWatch follows a tenant set through a rotation from an informer: every
// transition away from Ready=True, and each tenant's status.lastRefreshTime.
type rotationWatch struct {
	mu        sync.Mutex
	ready     map[string]bool
	refreshed map[string]time.Time
	lost      int
	changed   chan struct{} // closed and replaced on every update
}

func watchRotation(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, set tenantSet) (*rotationWatch, error) {
	w := &rotationWatch{ready: map[string]bool{}, refreshed: map[string]time.Time{}, changed: make(chan struct{})}
	return w, watchTenants(ctx, cfg, scheme, set, w.observe)
}

func (w *rotationWatch) observe(dt *v1alpha1.DefenderTenant) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := dt.Namespace + "/" + dt.Name
	ready := meta.IsStatusConditionTrue(dt.Status.Conditions, v1alpha1.ConditionReady)
	if was, seen := w.ready[key]; seen && was && !ready {
		w.lost++
		progress("tenant %s left Ready: %+v", key, meta.FindStatusCondition(dt.Status.Conditions, v1alpha1.ConditionReady))
	}
	w.ready[key] = ready
	if t := dt.Status.LastRefreshTime; t != nil {
		w.refreshed[key] = t.Time
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// waitMintedSince returns when n tenants show a lastRefreshTime at or after since.
func (w *rotationWatch) waitMintedSince(ctx context.Context, since time.Time, n int) (time.Time, error) {
	last := -1
	for {
		w.mu.Lock()
		count := 0
		for _, t := range w.refreshed {
			if !t.Before(since) {
				count++
			}
		}
		changed := w.changed
		w.mu.Unlock()
		if count >= n {
			return time.Now(), nil
		}
		if step := max(n/10, 1); count/step != last/step {
			progress("%d/%d re-minted", count, n)
			last = count
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%d of %d tenants re-minted after the promotion: %w", count, n, ctx.Err())
		}
	}
}

// counts returns the transitions away from Ready=True seen, and the tenants Ready now.
func (w *rotationWatch) counts() (lost, ready int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.ready {
		if r {
			ready++
		}
	}
	return w.lost, ready
}
