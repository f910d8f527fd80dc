package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// replicationDelay is how long the emulator keeps a key added through Graph from
// its token endpoint, as Entra ID replicas do for a while.
const replicationDelay = 5 * time.Second

// rotationPatch turns on managed rotation for the partner app: certificates of 90
// days, each replaced 30 days before it expires.
var rotationPatch = fmt.Sprintf(`{"spec":{"credential":{"certificate":{"rotation":{"applicationObjectID":%q,"homeTenantID":%q,"validity":"2160h","renewBefore":"720h"}}}}}`,
	demoObjectID, partnerTenantID)

// rotationTour turns on managed rotation for the partner app, whose certificate
// is already within renewBefore, and follows the rotation to its end while
// watching that no Ready tenant of the app leaves Ready.
func (d *demo) rotationTour(ctx context.Context) error {
	app := &v1alpha1.ClusterDefenderApp{}
	if err := d.client.Get(ctx, client.ObjectKey{Name: partnerAppName}, app); err != nil {
		return err
	}
	if app.Status.Certificate == nil || app.Status.Certificate.NotAfter == nil {
		return errors.New("the partner app shows no certificate in its status")
	}
	oldThumbprint := app.Status.Certificate.SHA1Thumbprint
	ready, err := d.readyFleet(ctx)
	if err != nil {
		return err
	}

	step(fmt.Sprintf("The partner certificate expires in %d days: the partner turns on managed rotation (renewBefore 720h, 30 days)",
		int(math.Round(time.Until(app.Status.Certificate.NotAfter.Time).Hours()/24))))
	if err := d.kubectl(ctx, "patch", "clusterdefenderapp", partnerAppName, "--type=merge", "-p", rotationPatch); err != nil {
		return err
	}
	detail("the app registration's object ID and home tenant let the operator call Graph's addKey as the app itself;")
	detail("the emulator accepts a new key %s after it is added, as Entra ID replicas do after a delay", replicationDelay)

	step("The partner certificate rotates itself")
	start := time.Now()
	promoted, left, err := d.waitForRotation(ctx, ready)
	if err != nil {
		return err
	}
	detail("promoted %s after rotation was turned on", time.Since(start).Round(time.Second))
	if err := d.kubectl(ctx, "get", "clusterdefenderapps", "-o", "wide"); err != nil {
		return err
	}
	if err := d.kubectl(ctx, "events", "-A", "--for", "clusterdefenderapp/"+partnerAppName); err != nil {
		return err
	}
	detail("old certificate (SHA-1): %s  (uploaded by a person, its keyId unknown: it stays registered until it expires)", oldThumbprint)
	detail("new certificate (SHA-1): %s  (notAfter %s)", promoted.Status.Certificate.SHA1Thumbprint,
		promoted.Status.Certificate.NotAfter.UTC().Format(time.RFC3339))

	step("Every tenant re-mints with the new certificate, and no Ready tenant left Ready")
	if err := d.waitForRemint(ctx, ready, promoted.Status.Rotation.LastRotationTime.Time, left); err != nil {
		return err
	}
	if len(*left) > 0 {
		return fmt.Errorf("tenants left Ready during the rotation: %s", strings.Join(*left, "; "))
	}
	for _, key := range ready {
		detail("%-40s Ready throughout, token re-minted after the promotion", key.Namespace+"/"+key.Name)
	}
	return nil
}

// readyFleet returns the partner app's tenants that are Ready now.
func (d *demo) readyFleet(ctx context.Context) ([]client.ObjectKey, error) {
	var ready []client.ObjectKey
	for _, ft := range append(fleet, woodgrove) {
		key := client.ObjectKey{Namespace: ft.namespace, Name: ft.name}
		t := &v1alpha1.DefenderTenant{}
		if err := d.client.Get(ctx, key, t); err != nil {
			return nil, err
		}
		if apimeta.IsStatusConditionTrue(t.Status.Conditions, v1alpha1.ConditionReady) {
			ready = append(ready, key)
		}
	}
	if len(ready) == 0 {
		return nil, errors.New("no tenant of the partner app is Ready")
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].String() < ready[j].String() })
	return ready, nil
}

// notReady appends to left each tenant of keys that is not Ready now.
func (d *demo) notReady(ctx context.Context, keys []client.ObjectKey, left *[]string) error {
	for _, key := range keys {
		t := &v1alpha1.DefenderTenant{}
		if err := d.client.Get(ctx, key, t); err != nil {
			return err
		}
		if c := apimeta.FindStatusCondition(t.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			what := "no Ready condition"
			if c != nil {
				what = "Ready=" + string(c.Status) + " " + c.Reason
			}
			*left = append(*left, fmt.Sprintf("%s %s at %s", key, what, time.Now().Format(time.TimeOnly)))
		}
	}
	return nil
}

// waitForRotation polls the app until its rotation is promoted, printing each
// phase it passes, and the tenants in ready that leave Ready meanwhile.
func (d *demo) waitForRotation(ctx context.Context, ready []client.ObjectKey) (*v1alpha1.ClusterDefenderApp, *[]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	left := &[]string{}
	start := time.Now()
	var shown string
	for {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := d.client.Get(ctx, client.ObjectKey{Name: partnerAppName}, app); err != nil {
			return nil, nil, err
		}
		if err := d.notReady(ctx, ready, left); err != nil {
			return nil, nil, err
		}
		if r := app.Status.Rotation; r != nil {
			line := "phase " + string(r.Phase)
			if r.LastRotationTime != nil {
				line += ", lastRotationTime " + r.LastRotationTime.UTC().Format(time.RFC3339)
			}
			if r.PendingThumbprint != "" {
				line += ", pending certificate " + r.PendingThumbprint
			}
			if c := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReconciling); c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonRotationFailed {
				// The whole message is in the Warning Event printed below.
				line += "; Reconciling: " + c.Reason + ", " + retryIn(c.Message)
			} else if r.Phase == v1alpha1.RotationKeyAdded {
				line += " (added through Graph; waiting until Entra ID accepts it)"
			}
			if c := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady); c != nil {
				line += "; Ready=" + string(c.Status)
			}
			if line != shown {
				detail("+%-4s %s", time.Since(start).Round(time.Second), line)
				shown = line
			}
			if r.LastRotationTime != nil && app.Status.Certificate != nil {
				return app, left, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("the partner certificate was not rotated (see %s): %w", rel(d.operatorLog), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitForRemint waits until every tenant in ready holds a token minted at or after
// the promotion, still noting the tenants that leave Ready.
func (d *demo) waitForRemint(ctx context.Context, ready []client.ObjectKey, promotedAt time.Time, left *[]string) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	for {
		if err := d.notReady(ctx, ready, left); err != nil {
			return err
		}
		var pending []string
		for _, key := range ready {
			t := &v1alpha1.DefenderTenant{}
			if err := d.client.Get(ctx, key, t); err != nil {
				return err
			}
			if t.Status.LastRefreshTime == nil || t.Status.LastRefreshTime.Time.Before(promotedAt) {
				pending = append(pending, key.String())
			}
		}
		if len(pending) == 0 {
			detail("all %d re-minted within %s of the promotion (spread over up to a minute, so Entra ID sees no burst)", len(ready), time.Since(promotedAt).Round(time.Second))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not re-mint after the promotion (see %s): %w", strings.Join(pending, ", "), rel(d.operatorLog), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// retryIn picks "retried in ..." out of a RotationFailed message, for a one-line
// summary; the message is what the operator wrote, so it falls back to a pointer.
func retryIn(message string) string {
	if i := strings.Index(message, "retried in "); i >= 0 {
		return "the new key is not accepted yet; " + strings.TrimSuffix(message[i:], ".")
	}
	return "see the Event below"
}
