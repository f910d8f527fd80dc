package entraemu_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func TestInjectedFailuresAreAnsweredInOrder(t *testing.T) {
	f := newFixture(t)
	f.emu.InjectFailures(tenantID,
		entraemu.Throttled(60*time.Second),
		entraemu.ServerError(),
		entraemu.BadGateway(),
		entraemu.Failure{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable", Code: 90006,
			Description: "The service is temporarily unavailable.", RetryAfter: 1500 * time.Millisecond},
	)
	form := creds("scope", xdrScope)

	t.Run("throttled: plain-text 429 with Retry-After", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), form)
		if resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") != "60" {
			t.Errorf("status = %d, Retry-After = %q; want 429, 60", resp.status, resp.header.Get("Retry-After"))
		}
		if ct := resp.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" || string(resp.body) != "Too Many Requests" {
			t.Errorf("Content-Type = %q, body = %q; want a plain-text body", ct, resp.body)
		}
	})
	t.Run("server error: Entra JSON", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), form)
		if resp.status != http.StatusInternalServerError {
			t.Errorf("status = %d, want 500", resp.status)
		}
		assertEntraError(t, resp, "server_error", 50033)
	})
	t.Run("bad gateway: a proxy's HTML", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), form)
		if resp.status != http.StatusBadGateway || resp.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("status = %d, Content-Type = %q; want 502, text/html", resp.status, resp.header.Get("Content-Type"))
		}
		if want := entraemu.BadGateway().Body; string(resp.body) != want {
			t.Errorf("body = %q, want %q", resp.body, want)
		}
	})
	t.Run("custom Entra error with Retry-After rounded up", func(t *testing.T) {
		resp := f.post(t, v2Path(tenantID), form)
		if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") != "2" {
			t.Errorf("status = %d, Retry-After = %q; want 503, 2", resp.status, resp.header.Get("Retry-After"))
		}
		assertEntraError(t, resp, "temporarily_unavailable", 90006)
	})
	t.Run("then normal processing", func(t *testing.T) {
		f.token(t, v2Path(tenantID), form)
	})
}

func TestInjectedFailureComesFirst(t *testing.T) {
	const unknownTenant = "9a1d7e3c-6b2f-4e8a-b5c4-2d0f1e3a7b65"
	f := newFixture(t)
	f.emu.InjectFailures(unknownTenant, entraemu.Throttled(time.Second))
	// A wrong secret as well: the injected failure wins over every check.
	form := creds("scope", xdrScope, "client_secret", "wrong")

	if resp := f.post(t, v2Path(unknownTenant), form); resp.status != http.StatusTooManyRequests {
		t.Errorf("first status = %d, want the injected 429", resp.status)
	}
	resp := f.post(t, v2Path(unknownTenant), form)
	if resp.status != http.StatusBadRequest {
		t.Errorf("second status = %d, want 400", resp.status)
	}
	assertEntraError(t, resp, "invalid_tenant", 90002)

	// Other tenants never see the failure.
	f.emu.InjectFailures(unknownTenant, entraemu.ServerError())
	f.token(t, v2Path(tenantID), creds("scope", xdrScope))
}

func TestDelayOnlyFailureGivesANormalAnswer(t *testing.T) {
	f := newFixture(t)
	f.emu.InjectFailures(tenantID, entraemu.Failure{Delay: 20 * time.Millisecond})

	start := time.Now()
	f.token(t, v2Path(tenantID), creds("scope", xdrScope))
	if elapsed := time.Since(start); elapsed < 20*time.Millisecond {
		t.Errorf("answered after %v, want at least the 20ms delay", elapsed)
	}
}

func TestHeldRequestIsAnsweredOnlyOnRelease(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	f.emu.InjectFailures(tenantID, entraemu.Held(release))

	answered := make(chan int, 1)
	go func() {
		resp, err := http.PostForm(f.srv.URL+v2Path(tenantID), creds("scope", xdrScope))
		if err != nil {
			answered <- 0
			return
		}
		_ = resp.Body.Close()
		answered <- resp.StatusCode
	}()
	if err := f.emu.WaitForRequests(t.Context(), tenantID, 1); err != nil {
		t.Fatal(err)
	}
	// The request has arrived; a second, unheld one is answered while it waits.
	f.token(t, v2Path(tenantID), creds("scope", xdrScope))
	select {
	case <-answered:
		t.Fatal("the held request was answered before its release")
	default:
	}
	close(release)
	if status := <-answered; status != http.StatusOK {
		t.Errorf("the released request got status %d, want 200", status)
	}
}

func TestWaitsEndWhenTheClientGivesUp(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*testing.T, *entraemu.Emulator)
	}{
		{name: "hanging endpoint", setup: func(_ *testing.T, e *entraemu.Emulator) { e.InjectFailures(tenantID, entraemu.Hang(10*time.Second)) }},
		{name: "latency", setup: func(_ *testing.T, e *entraemu.Emulator) { e.SetLatency(10 * time.Second) }},
		{name: "held", setup: func(t *testing.T, e *entraemu.Emulator) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) }) // before the server's Close, which waits for the handler
			e.InjectFailures(tenantID, entraemu.Held(release))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			handlerDone := make(chan struct{})
			var answered atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(handlerDone)
				f.emu.ServeHTTP(answerRecorder{w, &answered}, r)
			}))
			t.Cleanup(srv.Close)
			tc.setup(t, f.emu)
			client := srv.Client()
			client.Timeout = 50 * time.Millisecond

			start := time.Now()
			resp, err := client.PostForm(srv.URL+v2Path(tenantID), creds("scope", xdrScope))
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("got status %d, want the client to time out", resp.StatusCode)
			}
			// The waits last 10s or for ever: only a cutoff for a handler that never
			// ends. One that ends without answering stopped because the client left.
			select {
			case <-handlerDone:
			case <-time.After(30 * time.Second):
				t.Fatal("the handler is still waiting 30s after the client gave up")
			}
			if answered.Load() {
				t.Error("the handler answered after the client had given up: its wait ran to the end")
			}
			t.Logf("the handler returned %v after the request", time.Since(start))
		})
	}
}

// answerRecorder notes whether the handler started an answer.
type answerRecorder struct {
	http.ResponseWriter
	answered *atomic.Bool
}

func (a answerRecorder) WriteHeader(status int) {
	a.answered.Store(true)
	a.ResponseWriter.WriteHeader(status)
}

func (a answerRecorder) Write(b []byte) (int, error) {
	a.answered.Store(true)
	return a.ResponseWriter.Write(b)
}

func TestLatencyDelaysEveryRequest(t *testing.T) {
	f := newFixture(t)
	f.emu.SetLatency(20 * time.Millisecond)

	start := time.Now()
	f.token(t, v2Path(tenantID), creds("scope", xdrScope))
	if elapsed := time.Since(start); elapsed < 20*time.Millisecond {
		t.Errorf("answered after %v, want at least the 20ms latency", elapsed)
	}
}

func TestWaitForRequestsEndsWithTheContext(t *testing.T) {
	f := newFixture(t)
	f.token(t, v2Path(tenantID), creds("scope", xdrScope))
	if err := f.emu.WaitForRequests(t.Context(), tenantID, 1); err != nil {
		t.Fatalf("one request received, waiting for one: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.emu.WaitForRequests(ctx, tenantID, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("waiting for a second request with a cancelled context = %v, want context.Canceled", err)
	}
}
