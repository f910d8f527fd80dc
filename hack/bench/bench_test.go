package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// buildOnce builds the manager once for all smoke tests, outside their deadlines:
// cold (see buildManager), the build can take longer on a small machine than a
// whole run is allowed.
var buildOnce = sync.OnceValues(func() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "defender-bench-manager-")
	if err != nil {
		return "", err
	}
	return buildManager(context.Background(), root, dir)
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := buildOnce(); err == nil {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// smokeRun runs the harness with c and the manager built once, within two minutes,
// and two more with the managed rotation, whose re-mints are spread over a minute.
func smokeRun(t *testing.T, c config) *report {
	t.Helper()
	if testing.Short() || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs KUBEBUILDER_ASSETS (make test sets it) and is not short")
	}
	setLogger()
	manager, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	c.Manager = manager
	limit := 2 * time.Minute
	if c.ManagedRotation {
		limit += 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	var out bytes.Buffer
	r, err := run(ctx, c, newReport(&out))
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBenchSmoke runs the whole harness at N=5 to prove that it works. It checks
// counts only: timings belong to `make bench`, not to tests.
func TestBenchSmoke(t *testing.T) {
	t.Parallel()
	r := smokeRun(t, config{N: 5, Idle: time.Second, Unrelated: 20, Workers: 10, Settle: time.Second})
	expectValues(t, r, map[string]string{
		"run_token_requests":                   "5",
		"idle_token_requests":                  "0",
		"idle_api_writes":                      "0",
		"idle_api_requests":                    "0",
		"restart_token_requests":               "0",
		"run_api POST secrets":                 "5",
		"run_api PATCH defendertenants/status": "5",
	})
	// The five tenants share one credential Secret. Workers that start before its first
	// read returns read it too; token Secrets that do not exist yet are never read.
	if got, err := strconv.Atoi(r.values["run_api GET secrets"]); err != nil || got > 5 {
		t.Errorf("run_api GET secrets = %q, want at most 5 (one credential, no token Secret reads)", r.values["run_api GET secrets"])
	}
	if got := strings.Fields(r.values["paired_ready_seconds"]); len(got) != 3 {
		t.Errorf("paired_ready_seconds = %q, want three operator runs paired with the floor's", r.values["paired_ready_seconds"])
	}
	for _, name := range []string{"run_reconcile_mean_ms", "run_token_request_mean_ms", "ratio_to_floor"} {
		if ms, err := strconv.ParseFloat(r.values[name], 64); err != nil || ms <= 0 {
			t.Errorf("%s = %q, want a positive figure from the operator's histograms", name, r.values[name])
		}
	}
}

// TestBenchSmokeApp runs the app mode (-app) at N=6 over 3 namespaces, without the
// partner's rotation but with the managed one (the re-mints of either are spread
// over a minute whatever N; the managed rotation is the one with a contract to
// check). Counts only. Most of its time is a control plane's start, three operator
// pairs, like TestBenchSmoke's, and the managed rotation's minute, so the two run
// in parallel.
func TestBenchSmokeApp(t *testing.T) {
	t.Parallel()
	// Without a replication delay the first check of the new key succeeds, and the
	// promotion follows addKey by about a second instead of the slow backoff's minute.
	r := smokeRun(t, config{N: 6, Idle: time.Second, Workers: 10, App: true, Namespaces: 3, SkipRotation: true, ManagedRotation: true})
	expectValues(t, r, map[string]string{
		"mode":                                 "app",
		"run_token_requests":                   "6",
		"idle_token_requests":                  "0",
		"idle_api_writes":                      "0",
		"restart_token_requests":               "0",
		"run_api POST secrets":                 "6",
		"run_api PATCH defendertenants/status": "6",
		"idle_app_status_writes":               "0",
		// Every tenant re-minted once after the promotion, and none left Ready:
		// ready_after shows the watch that counts the losses saw every tenant Ready.
		"managed_rotation_remint_token_requests": "6",
		"managed_rotation_ready_lost":            "0",
		"managed_rotation_ready_after":           "6",
		"managed_rotation_app_ready":             "true",
	})
	// The rotation ran through Graph in the home tenant: a check of the adopted
	// certificate, a token for addKey, one for the check of the new key at least.
	if got, err := strconv.Atoi(r.values["managed_rotation_home_tenant_token_requests"]); err != nil || got < 3 {
		t.Errorf("managed_rotation_home_tenant_token_requests = %q, want at least 3", r.values["managed_rotation_home_tenant_token_requests"])
	}
	if phase := r.values["managed_rotation_app_phase"]; phase != string(v1alpha1.RotationPromoted) && phase != string(v1alpha1.RotationIdle) {
		t.Errorf("managed_rotation_app_phase = %q, want Promoted or Idle", phase)
	}
	// status.tenants is written at most once per 10 s: at most one write per
	// started 10 s until the app showed every tenant Ready, and the app
	// controller's own, none of which the create needs.
	writes, err := strconv.Atoi(r.values["run_app_status_writes"])
	summarised, serr := strconv.ParseFloat(r.values["app_summary_ready_seconds"], 64)
	if err != nil || serr != nil || writes < 1 || float64(writes) > summarised/10+1 {
		t.Errorf("run_app_status_writes = %q with app_summary_ready_seconds = %q, want at least 1 and at most one per started 10 s",
			r.values["run_app_status_writes"], r.values["app_summary_ready_seconds"])
	}
	for _, name := range []string{"assertion_sign_cpu_us_per_token", "run_cpu_ms_per_token", "ratio_to_floor"} {
		if v, err := strconv.ParseFloat(r.values[name], 64); err != nil || v <= 0 {
			t.Errorf("%s = %q, want a positive figure", name, r.values[name])
		}
	}
}

func expectValues(t *testing.T, r *report, want map[string]string) {
	t.Helper()
	for name, w := range want {
		if got := r.values[name]; got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
}
