//go:build e2e

package e2e

// Faults of the process and of the control plane that a deployed operator meets:
// kube-apiserver restarting under it, its own process killed mid-work, and a
// second replica taking over when the leader dies. Each test has a sandbox of its
// own (sandbox_test.go); all but the API server restart, which must not be slowed
// down by the others, run in parallel.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// faultsNamespace holds the tenants of every fault test; each test has a sandbox,
// and so a namespace of that name, of its own.
const faultsNamespace = "partner"

// allReady returns a check that every named tenant of faultsNamespace is Ready.
func allReady(c client.Client, names []string) func() error {
	return func() error {
		var notReady []string
		var last error
		for _, name := range names {
			if err := readyError(c, faultsNamespace, name); err != nil {
				notReady, last = append(notReady, name), err
			}
		}
		if len(notReady) > 0 {
			return fmt.Errorf("%d of %d tenants are not Ready, e.g. %w", len(notReady), len(names), last)
		}
		return nil
	}
}

// TestOperatorRecoversFromAnAPIServerRestartWithoutRestarting stops kube-apiserver
// under a running operator whose tenants are Ready, keeps etcd and its data, and
// starts kube-apiserver again on the same port with the same certificates and
// ServiceAccount signing key, as a control-plane upgrade or crash does. The
// operator must ride it out in the same process: no token Secret lost, none
// rewritten with a token that does not validate, no token minted again, a tenant
// whose reconcile was in flight through the outage served, and a tenant created
// after the restart served.
func TestOperatorRecoversFromAnAPIServerRestartWithoutRestarting(t *testing.T) {
	s := newSandbox(t, "default")
	const ns = faultsNamespace
	s.createNamespace(t, ns)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	op := s.startOperator(t, "operator")

	const n = 5
	names := make([]string, 0, n)
	for i := range n {
		s.addConsentedTenant(tenantID(i))
		names = append(names, fmt.Sprintf("tenant-%d", i))
		s.createTenant(t, ns, names[i], tenantID(i))
	}
	waitFor(t, 30*time.Second, "every tenant Ready", allReady(s.admin, names), op)
	before := tokenSecrets(t, s.admin, ns)
	if len(before) != n {
		t.Fatalf("%d token Secrets, want %d", len(before), n)
	}
	if !op.isLeader(t) {
		t.Fatal("the operator serves its tenants but does not report leading")
	}

	// The outage, stopping (up to 2s: kube-apiserver gives open watches that long)
	// plus the pause plus starting (2-3s), has to stay well below the leader's renew
	// deadline (10s; the manager has no flag for it): a leader that cannot renew its
	// Lease for that long gives it up and the manager exits, by design, for the
	// kubelet to restart it. That is why this test does not run in parallel.
	const pause = time.Second

	// One more tenant whose token request Entra answers only once the API server is
	// down: its reconcile is in flight through the outage, and cannot publish what
	// it minted until the API server is back.
	s.addConsentedTenant(tenantID(n + 1))
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	s.emu.InjectFailures(tenantID(n+1), entraemu.Held(hold))
	s.createTenant(t, ns, "in-flight", tenantID(n+1))
	waitFor(t, 10*time.Second, "the in-flight tenant's token request reaches Entra", func() error {
		if s.emu.Requests(tenantID(n+1)) == 0 {
			return fmt.Errorf("no token request yet")
		}
		return nil
	}, op)

	controlPlaneStarts.Lock()
	down := time.Now()
	if err := s.cluster.StopAPIServer(); err != nil {
		controlPlaneStarts.Unlock()
		t.Fatal(err)
	}
	release()
	// The outage itself: the in-flight tenant's write meets it. Nothing below
	// depends on how long it lasted.
	time.Sleep(pause)
	err := s.cluster.StartAPIServer()
	outage := time.Since(down)
	controlPlaneStarts.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver was stopped for %s (%s of it idle), then healthy again on %s", outage.Round(time.Millisecond), pause, s.cluster.Admin.Host)

	select {
	case <-op.Done():
		t.Fatalf("the operator exited while kube-apiserver restarted (down %s; leader election: %s): %v\n%s",
			outage, defaultLeaderElection, op.Err(), logTail(op.log, 30))
	default:
	}

	// A tenant created after the restart is served by the same process: its
	// informers re-established their watches.
	s.addConsentedTenant(tenantID(n))
	s.createTenant(t, ns, "after-restart", tenantID(n))
	waitFor(t, 60*time.Second, "the tenant created after the restart is Ready", func() error {
		return readyError(s.admin, ns, "after-restart")
	}, op)
	waitFor(t, 10*time.Second, "the tenants from before are still Ready", allReady(s.admin, names), op)
	// A kube-apiserver that has just started may answer Forbidden until its RBAC
	// authorizer has synced. The in-flight tenant's write can meet that window; the
	// contract stalls a Forbidden write (SecretWriteFailed) and retries it after
	// about a minute, so this wait covers one slow-backoff step.
	waitFor(t, 90*time.Second, "the tenant in flight through the outage is Ready", func() error {
		return readyError(s.admin, ns, "in-flight")
	}, op)
	t.Logf("every tenant Ready %s after the API server was back; the in-flight tenant took %d token requests",
		time.Since(down.Add(outage)).Round(time.Millisecond), s.emu.Requests(tenantID(n+1)))

	keys := s.signingKeys(t)
	after := tokenSecrets(t, s.admin, ns)
	for i, name := range names {
		secret, ok := after[name+"-token"]
		if !ok {
			t.Errorf("token Secret %s was lost in the restart", name+"-token")
			continue
		}
		if err := checkTokenSecret(secret, keys, tenantID(i)); err != nil {
			t.Error(err)
		}
		if string(secret.Data[v1alpha1.TokenSecretKeyAccessToken]) != string(before[name+"-token"].Data[v1alpha1.TokenSecretKeyAccessToken]) {
			t.Errorf("token Secret %s holds another token after the restart: a fresh token was replaced", secret.Name)
		}
		if got := s.emu.Requests(tenantID(i)); got != 1 {
			t.Errorf("%s: %d token requests, want 1: a restart of kube-apiserver is no reason to mint again", name, got)
		}
	}
	for name, id := range map[string]string{"after-restart": tenantID(n), "in-flight": tenantID(n + 1)} {
		if secret, ok := after[name+"-token"]; !ok {
			t.Errorf("no token Secret for %s", name)
		} else if err := checkTokenSecret(secret, keys, id); err != nil {
			t.Error(err)
		}
	}
	if got := s.emu.Requests(tenantID(n)); got != 1 {
		t.Errorf("after-restart: %d token requests, want 1", got)
	}
	// The token minted during the outage may be lost with the write that failed;
	// one more request replaces it, and no more are needed.
	if got := s.emu.Requests(tenantID(n + 1)); got > 2 {
		t.Errorf("in-flight: %d token requests, want 1 or 2", got)
	}
	if lost := op.logLines("leader election lost"); len(lost) > 0 {
		t.Errorf("the operator lost its leadership:\n%s", strings.Join(lost, "\n"))
	}
	if op.Err() != nil || !isRunning(op) {
		t.Errorf("the operator is no longer running: %v", op.Err())
	}
}

// TestOperatorKilledMidMintRecoversAndReusesPublishedTokens SIGKILLs the operator while
// it mints tokens for 20 tenants (the emulator answers after 2s, so requests are in
// flight), and starts it again. Every tenant ends Ready with a valid token. A tenant
// whose token was published before the kill is not minted again (the restart reuses
// it); a tenant whose request was in flight may be minted once more, since that
// answer went to a dead process: so no tenant gets more than two requests, and the
// total exceeds the tenant count by at most the requests in flight at the kill. A
// further restart (graceful, SIGTERM), with every token fresh, makes no token
// request at all.
func TestOperatorKilledMidMintRecoversAndReusesPublishedTokens(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "default")
	const ns = faultsNamespace
	s.createNamespace(t, ns)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	s.emu.SetLatency(2 * time.Second)
	le := fastLeaderElection(t)
	t.Logf("leader election: %s", le)
	// Ten reconciles at a time (the default, pinned here): the first ten tenants'
	// requests are answered together after 2s, then the next ten are sent.
	args := append([]string{"--max-concurrent-reconciles=10"}, le.args...)
	first := s.startOperator(t, "operator-1", args...)

	const n = 20
	names := make([]string, 0, n)
	for i := range n {
		s.addConsentedTenant(tenantID(i))
		names = append(names, fmt.Sprintf("tenant-%02d", i))
		s.createTenant(t, ns, names[i], tenantID(i))
	}
	// Kill it once the second ten requests are being sent: by then some tokens are
	// published, and at least five requests wait on the emulator for 2s.
	waitFor(t, 30*time.Second, "some tokens published while more are being minted", func() error {
		published, requests := len(tokenSecrets(t, s.admin, ns)), s.emu.TotalRequests()
		if published < 5 || requests < 15 {
			return fmt.Errorf("%d tokens published, %d requested", published, requests)
		}
		return nil
	}, first)
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Read what the dead process left, so that nothing changes under the reading.
	published := tokenSecrets(t, s.admin, ns)
	atKill := map[string]int{}
	var inFlight []string
	for i, name := range names {
		atKill[name] = s.emu.Requests(tenantID(i))
		if _, ok := published[name+"-token"]; !ok && atKill[name] > 0 {
			inFlight = append(inFlight, name)
		}
	}
	if len(inFlight) == 0 {
		t.Fatal("no token request was in flight at the kill: the test did not kill the operator mid-mint")
	}
	t.Logf("killed with %d of %d tokens published and %d requests in flight", len(published), n, len(inFlight))
	s.emu.SetLatency(0)

	// The dead leader does not release its Lease: the new process waits it out.
	second := s.startOperator(t, "operator-2", args...)
	waitFor(t, le.lease+le.maxRetry()+30*time.Second, "every tenant Ready after the restart", allReady(s.admin, names), second)
	t.Logf("every tenant Ready %s after the kill", time.Since(killed).Round(time.Millisecond))

	keys := s.signingKeys(t)
	secrets := tokenSecrets(t, s.admin, ns)
	total := 0
	for i, name := range names {
		secret, ok := secrets[name+"-token"]
		if !ok {
			t.Errorf("%s: no token Secret", name)
		} else if err := checkTokenSecret(secret, keys, tenantID(i)); err != nil {
			t.Error(err)
		}
		got := s.emu.Requests(tenantID(i))
		total += got
		_, wasPublished := published[name+"-token"]
		switch {
		case wasPublished && got != 1:
			t.Errorf("%s: %d token requests, want 1: its token was published before the kill and is fresh, so the restart must reuse it", name, got)
		case slices.Contains(inFlight, name) && (got < 1 || got > 2):
			t.Errorf("%s: %d token requests, want 1 or 2: one request was lost with the killed process, at most one more is needed", name, got)
		case atKill[name] == 0 && got != 1:
			t.Errorf("%s: %d token requests, want 1: nothing was requested for it before the kill", name, got)
		}
	}
	if total > n+len(inFlight) {
		t.Errorf("%d token requests for %d tenants with %d in flight at the kill, want at most %d", total, n, len(inFlight), n+len(inFlight))
	}

	// A restart with every token fresh asks Entra for nothing.
	requests := s.emu.TotalRequests()
	if err := second.Stop(15 * time.Second); err != nil {
		t.Fatalf("operator-2 did not stop cleanly on SIGTERM: %v", err)
	}
	third := s.startOperator(t, "operator-3", args...)
	waitFor(t, le.lease+le.maxRetry()+10*time.Second, "operator-3 leads and has reconciled every tenant", func() error {
		if !third.isLeader(t) {
			return fmt.Errorf("operator-3 does not lead yet")
		}
		if done := reconciled(t, third); done < n {
			return fmt.Errorf("operator-3 has completed %v reconciles, want at least %d", done, n)
		}
		return nil
	}, third)
	if got := s.emu.TotalRequests() - requests; got != 0 {
		t.Errorf("the restart with %d fresh tokens made %d token requests, want 0", n, got)
	}
	waitFor(t, 5*time.Second, "every tenant still Ready", allReady(s.admin, names), third)
}

// TestStandbyReplicaTakesOverWhenTheLeaderIsKilled runs two managers with
// --leader-elect, as a Deployment with two replicas does. Only the one holding
// the Lease mints, once per tenant; the standby makes no token request. When the
// leader is SIGKILLed (so it cannot release the Lease), the standby takes the Lease
// once it expires, within LeaseDuration + one jittered RetryPeriod + 5s of slack
// (15s + 4.4s + 5s with the defaults that cmd/main.go uses today), and serves
// tenants created after that, without minting again for the tenants already served.
func TestStandbyReplicaTakesOverWhenTheLeaderIsKilled(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, "default")
	if !slices.Contains(s.deploymentArgs, "--leader-elect") {
		t.Fatalf("the rendered Deployment does not run the manager with --leader-elect: %q", s.deploymentArgs)
	}
	const ns = faultsNamespace
	s.createNamespace(t, ns)
	createCredential(t, s.admin, ns, credentialSecret, sandboxClientSecret)
	le := fastLeaderElection(t)
	t.Logf("leader election: %s", le)
	a := s.startOperator(t, "replica-a", le.args...)
	b := s.startOperator(t, "replica-b", le.args...)

	var leader, standby *operator
	waitFor(t, 30*time.Second, "one replica leads", func() error {
		la, lb := a.isLeader(t), b.isLeader(t)
		switch {
		case la && lb:
			t.Fatal("both replicas report leading")
		case la:
			leader, standby = a, b
		case lb:
			leader, standby = b, a
		default:
			return fmt.Errorf("neither replica leads yet")
		}
		return nil
	}, a, b)
	lease := &coordinationv1.Lease{}
	leaseKey := client.ObjectKey{Namespace: s.operatorNamespace, Name: leaderElectionID}
	if err := s.admin.Get(context.Background(), leaseKey, lease); err != nil {
		t.Fatal(err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	if holder == "" {
		t.Fatalf("%s leads but Lease %s has no holder", leader.name, leaseKey)
	}
	// The holder writes its LeaseDuration into the Lease: how long a standby waits
	// for a dead leader's Lease comes from it.
	if got := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0); time.Duration(got)*time.Second != le.lease {
		t.Errorf("Lease %s says leaseDurationSeconds %d, want the %s the replicas run with", leaseKey, got, le.lease)
	}

	const n = 6
	names := make([]string, 0, n)
	for i := range n {
		s.addConsentedTenant(tenantID(i))
		names = append(names, fmt.Sprintf("tenant-%d", i))
		s.createTenant(t, ns, names[i], tenantID(i))
	}
	waitFor(t, 30*time.Second, "every tenant Ready", allReady(s.admin, names), a, b)
	for i, name := range names {
		if got := s.emu.Requests(tenantID(i)); got != 1 {
			t.Errorf("%s: %d token requests, want 1: only the leader mints", name, got)
		}
	}
	if got := leader.metric(t, "defender_tenant_token_requests_total"); got != n {
		t.Errorf("the leader, %s, counts %v token requests, want %d", leader.name, got, n)
	}
	if got := standby.metric(t, "defender_tenant_token_requests_total"); got != 0 {
		t.Errorf("the standby, %s, counts %v token requests, want 0", standby.name, got)
	}
	if got := reconciled(t, standby); got != 0 {
		t.Errorf("the standby, %s, has reconciled %v times, want 0", standby.name, got)
	}
	if standby.isLeader(t) {
		t.Errorf("the standby, %s, reports leading beside %s", standby.name, leader.name)
	}

	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, le.lease+le.maxRetry()+10*time.Second, "the standby takes the Lease", func() error {
		if err := s.admin.Get(context.Background(), leaseKey, lease); err != nil {
			return err
		}
		if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h == holder || h == "" {
			return fmt.Errorf("Lease %s is held by %q", leaseKey, h)
		}
		if !standby.isLeader(t) {
			return fmt.Errorf("the Lease changed hands but %s does not report leading", standby.name)
		}
		return nil
	}, standby)
	// A figure, not a verdict: the Lease's duration is checked above, and the wait's
	// timeout is only a cutoff.
	t.Logf("%s took the Lease %s after %s was killed (LeaseDuration %s, jittered RetryPeriod up to %s)",
		standby.name, time.Since(killed).Round(time.Millisecond), leader.name, le.lease, le.maxRetry())
	if got := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0); time.Duration(got)*time.Second != le.lease {
		t.Errorf("%s holds Lease %s with leaseDurationSeconds %d, want %s", standby.name, leaseKey, got, le.lease)
	}

	var added []string
	for i := n; i < n+3; i++ {
		s.addConsentedTenant(tenantID(i))
		name := fmt.Sprintf("tenant-%d", i)
		added = append(added, name)
		s.createTenant(t, ns, name, tenantID(i))
	}
	waitFor(t, 30*time.Second, "the tenants created after the takeover are Ready", allReady(s.admin, added), standby)
	keys := s.signingKeys(t)
	secrets := tokenSecrets(t, s.admin, ns)
	for i, name := range append(names, added...) {
		if got := s.emu.Requests(tenantID(i)); got != 1 {
			t.Errorf("%s: %d token requests, want 1", name, got)
		}
		if secret, ok := secrets[name+"-token"]; !ok {
			t.Errorf("%s: no token Secret", name)
		} else if err := checkTokenSecret(secret, keys, tenantID(i)); err != nil {
			t.Error(err)
		}
	}
	if got := standby.metric(t, "defender_tenant_token_requests_total"); got != float64(len(added)) {
		t.Errorf("the new leader, %s, counts %v token requests, want %d: one per new tenant, none for the tenants already served", standby.name, got, len(added))
	}
}

// reconciled is the number of DefenderTenant reconciles the manager completed
// without error, whatever it requeued.
func reconciled(t *testing.T, op *operator) float64 {
	t.Helper()
	const family = "controller_runtime_reconcile_total"
	label := `controller="defendertenant"`
	return op.metric(t, family, label) - op.metric(t, family, label, `result="error"`)
}

func isRunning(op *operator) bool {
	select {
	case <-op.Done():
		return false
	default:
		return true
	}
}
