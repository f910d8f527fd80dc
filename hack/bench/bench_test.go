package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

// TestBenchSmoke runs the whole harness at N=5 to prove that it works. It checks
// counts only: timings belong to `make bench`, not to tests.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("needs KUBEBUILDER_ASSETS (make test sets it) and is not short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	r, err := run(ctx, config{N: 5, Idle: time.Second, Unrelated: 20, Workers: 10, Settle: time.Second}, newReport(&out))
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"run_token_requests":     "5",
		"idle_token_requests":    "0",
		"idle_api_writes":        "0",
		"restart_token_requests": "0",
		"run_api POST secrets":   "5",
	} {
		if got := r.values[name]; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
