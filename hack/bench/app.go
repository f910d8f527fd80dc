package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
	"github.com/tenantcreds/defender-tenant-operator/internal/selfsigned"
)

const (
	appName        = "partner"
	certSecretName = "partner-app-cert"
	// clusterResourceNS is the operator's --cluster-resource-namespace, given as a
	// flag so that a POD_NAMESPACE in the harness's environment cannot move it.
	clusterResourceNS = "defender-tenant-operator-system"
	customerLabel     = "bench.tenantcreds.io/customer"
	// signingRounds token requests are timed per credential for the signing cost.
	signingRounds = 300
)

// newCertificate is an app certificate credential valid for a year or, with
// -managed-rotation, for managedCertificateLifetime: a certificate the managed
// rotation must replace as soon as it is put under it.
func (b *bench) newCertificate() (selfsigned.Certificate, error) {
	now := time.Now()
	notAfter := now.AddDate(1, 0, 0)
	if b.ManagedRotation {
		notAfter = now.Add(managedCertificateLifetime)
	}
	return selfsigned.New("defender-tenant-operator bench", now.Add(-time.Hour), notAfter)
}

func tlsData(c selfsigned.Certificate) map[string][]byte {
	return map[string][]byte{corev1.TLSCertKey: c.CertPEM, corev1.TLSPrivateKeyKey: c.KeyPEM}
}

// setUpApp installs what the app mode's tenants use, as an install and a partner
// would: the cluster resource namespace with the operator's Role bound in it, the
// certificate registered on the app registration and stored in a kubernetes.io/tls
// Secret there, and a ClusterDefenderApp whose grant selects the harness's namespaces
// for any tenant.
func (b *bench) setUpApp(ctx context.Context, root string) error {
	if err := b.cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clusterResourceNS}}); err != nil {
		return err
	}
	resources, err := grantClusterResourcesRole(ctx, b.cl, filepath.Join(root, "config", "rbac", "cluster_resources_role.yaml"), clusterResourceNS)
	if err != nil {
		return err
	}
	for r := range resources {
		b.operatorResources[r] = true
	}
	if b.cert, err = b.newCertificate(); err != nil {
		return err
	}
	b.emu.AddCertificate(clientID, b.cert.Cert)
	b.emu.RegisterApplication(entraemu.Application{ObjectID: appObjectID, ClientID: clientID, HomeTenantID: homeTenantID})
	if err := b.cl.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: certSecretName, Namespace: clusterResourceNS},
		Type:       corev1.SecretTypeTLS,
		Data:       tlsData(b.cert),
	}); err != nil {
		return err
	}
	return b.cl.Create(ctx, &v1alpha1.ClusterDefenderApp{
		ObjectMeta: metav1.ObjectMeta{Name: appName},
		Spec: v1alpha1.ClusterDefenderAppSpec{
			AppSpec: v1alpha1.AppSpec{
				ClientID:   clientID,
				Credential: v1alpha1.AppCredential{Certificate: &v1alpha1.CertificateCredential{SecretRef: v1alpha1.AppSecretReference{Name: certSecretName}}},
			},
			TenantGrants: []v1alpha1.TenantGrant{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{customerLabel: "true"}},
				TenantIDs:         []string{"*"},
			}},
		},
	})
}

// waitAppReady waits until the operator has found the app's certificate usable, so
// that the timed create starts from a served app, as in a running cluster.
func (b *bench) waitAppReady(ctx context.Context) error {
	for {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := b.cl.Get(ctx, client.ObjectKey{Name: appName}, app); err != nil {
			return err
		}
		if meta.IsStatusConditionTrue(app.Status.Conditions, v1alpha1.ConditionReady) {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("ClusterDefenderApp %s not Ready: %w", appName, err)
		}
	}
}

// waitAppSummary waits until the app's status.tenants shows the N tenants of the
// run Ready, and reports when it did, counted from start.
func (b *bench) waitAppSummary(ctx context.Context, start time.Time) error {
	for {
		app := &v1alpha1.ClusterDefenderApp{}
		if err := b.cl.Get(ctx, client.ObjectKey{Name: appName}, app); err != nil {
			return err
		}
		if s := app.Status.Tenants; s != nil && s.Total == int32(b.N) && s.Ready == int32(b.N) {
			b.out.add("app_summary_ready_seconds", "%.2f", time.Since(start).Seconds())
			return nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("ClusterDefenderApp %s status.tenants = %+v, want %d Ready: %w", appName, app.Status.Tenants, b.N, err)
		}
	}
}

// signing measures what a certificate credential adds to a token request in the
// operator's own code: internal/entra's Client.RequestToken, in this process, against
// a transport that answers at once without a network, once with the certificate (a
// PS256 assertion signed for every request) and once with a client secret. The
// difference of the process's CPU time (getrusage) per request is the signing cost;
// it is taken before anything in this process is busy.
func (b *bench) signing(ctx context.Context) error {
	progress("timing %d token requests with a certificate and %d with a client secret", signingRounds, signingRounds)
	cert, err := entra.ParseCertificate(b.cert.CertPEM, b.cert.KeyPEM)
	if err != nil {
		return err
	}
	answer := roundTripper(func(r *http.Request) (*http.Response, error) {
		_, _ = io.Copy(io.Discard, r.Body)
		return &http.Response{
			StatusCode: http.StatusOK,
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       io.NopCloser(strings.NewReader(`{"access_token":"bench","token_type":"Bearer","expires_in":3600}`)),
			Request:    r,
		}, nil
	})
	c := &entra.Client{HTTPClient: &http.Client{Transport: answer}}
	perRequest := func(cred entra.Credential) (time.Duration, error) {
		req := entra.Request{AuthorityHost: entra.AuthorityHost(v1alpha1.CloudPublic), TenantID: tenantID(0), ClientID: clientID, Credential: cred, Resource: defenderAPI}
		var start time.Duration
		for i := range signingRounds + 10 {
			if i == 10 { // the first requests warm up what is built once
				start = processCPU()
			}
			if _, err := c.RequestToken(ctx, req); err != nil {
				return 0, err
			}
		}
		return (processCPU() - start) / signingRounds, nil
	}
	withCert, err := perRequest(cert)
	if err != nil {
		return err
	}
	withSecret, err := perRequest(entra.ClientSecret(clientSecret))
	if err != nil {
		return err
	}
	b.out.add("token_request_cpu_us certificate", "%d", withCert.Microseconds())
	b.out.add("token_request_cpu_us client_secret", "%d", withSecret.Microseconds())
	b.out.add("assertion_sign_cpu_us_per_token", "%d", (withCert - withSecret).Microseconds())
	return nil
}

// processCPU is this process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rotation rolls the app's certificate over as a partner would: the new certificate
// is registered on the app registration next to the old one, then replaces it in the
// TLS Secret. The operator re-mints every tenant's token, spread over a minute; the
// harness counts the emulator's token requests every 100 ms until N are done and
// reports the most in any one second (a sliding window).
func (b *bench) rotation(ctx context.Context) error {
	progress("rotating the app's certificate")
	next, err := b.newCertificate()
	if err != nil {
		return err
	}
	b.emu.AddCertificate(clientID, next.Cert)
	if err := b.window(ctx, "rotation", func() error {
		secret := &corev1.Secret{}
		if err := b.cl.Get(ctx, client.ObjectKey{Namespace: clusterResourceNS, Name: certSecretName}, secret); err != nil {
			return err
		}
		before := b.emu.TotalRequests()
		samples := newTokenSampler(b.emu.TotalRequests)
		defer samples.stop()
		secret.Data = tlsData(next)
		start := time.Now()
		if err := b.cl.Update(ctx, secret); err != nil {
			return err
		}
		for b.emu.TotalRequests()-before < b.N {
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("%d of %d tokens re-minted: %w", b.emu.TotalRequests()-before, b.N, err)
			}
		}
		done := time.Since(start)
		if _, err := b.op.waitQuiet(ctx, 0); err != nil {
			return err
		}
		worst := samples.maxPerSecond()
		b.out.add("rotation_seconds", "%.2f", done.Seconds())
		b.out.add("rotation_max_per_second", "%d", worst)
		b.out.add("rotation_max_percent_of_n", "%.1f", 100*float64(worst)/float64(b.N))
		return nil
	}); err != nil {
		return err
	}
	b.cert = next
	b.out.add("rotation_cpu_ms_per_token", "%.2f", perToken(b.cpu["rotation"], b.N))
	var list v1alpha1.DefenderTenantList
	if err := b.cl.List(ctx, &list, b.run.selector()); err != nil {
		return err
	}
	ready := 0
	for _, dt := range list.Items {
		if meta.IsStatusConditionTrue(dt.Status.Conditions, v1alpha1.ConditionReady) {
			ready++
		}
	}
	b.out.add("rotation_ready_after", "%d", ready)
	return nil
}

// tokenSampler reads a request counter every 100 ms.
type tokenSampler struct {
	mu     sync.Mutex
	counts []int
	done   chan struct{}
	ended  chan struct{}
}

const samplesPerSecond = 10

func newTokenSampler(total func() int) *tokenSampler {
	s := &tokenSampler{counts: []int{total()}, done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		tick := time.NewTicker(time.Second / samplesPerSecond)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
				s.mu.Lock()
				s.counts = append(s.counts, total())
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *tokenSampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
		<-s.ended
	}
}

// maxPerSecond is the most requests counted in any second, over windows that start at
// every sample.
func (s *tokenSampler) maxPerSecond() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	worst := 0
	for i := range s.counts {
		end := min(i+samplesPerSecond, len(s.counts)-1)
		worst = max(worst, s.counts[end]-s.counts[i])
	}
	return worst
}
