package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs the whole harness at N=5 to prove that it works. It checks
// counts only: timings belong to `make bench`, not to tests.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs KUBEBUILDER_ASSETS (make test sets it) and is not short")
	}
	setLogger()
	// The build is outside the run's deadline: cold (see buildManager), it can take
	// longer on a small machine than the whole run is allowed.
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	manager, err := buildManager(t.Context(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	r, err := run(ctx, config{N: 5, Idle: time.Second, Unrelated: 20, Workers: 10, Settle: time.Second, Manager: manager}, newReport(&out))
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"run_token_requests":                   "5",
		"idle_token_requests":                  "0",
		"idle_api_writes":                      "0",
		"idle_api_requests":                    "0",
		"restart_token_requests":               "0",
		"run_api POST secrets":                 "5",
		"run_api PATCH defendertenants/status": "5",
	} {
		if got := r.values[name]; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
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
