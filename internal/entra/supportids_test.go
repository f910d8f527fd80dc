package entra_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

var guidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// headerEndpoint answers every token request with respond and records the
// request headers.
func headerEndpoint(t *testing.T, respond http.HandlerFunc) (*httptest.Server, func() []http.Header) {
	t.Helper()
	var mu sync.Mutex
	var seen []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		respond(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return append([]http.Header(nil), seen...)
	}
}

func supportRequest(authority string) entra.Request {
	return entra.Request{
		AuthorityHost: authority,
		TenantID:      testTenant,
		ClientID:      testClient,
		Credential:    entra.ClientSecret(testSecret),
		Resource:      "https://api.security.microsoft.com",
	}
}

const okBody = `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJhbGciOi.ok.sig"}`

func TestRequestTokenSendsAFreshClientRequestID(t *testing.T) {
	srv, seen := headerEndpoint(t, answer(http.StatusOK, "application/json", okBody))
	c := &entra.Client{}
	ids := make([]string, 0, 2)
	for range 2 {
		tok, err := c.RequestToken(context.Background(), supportRequest(srv.URL))
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		ids = append(ids, tok.ClientRequestID)
	}
	headers := seen()
	if len(headers) != 2 {
		t.Fatalf("%d requests, want 2", len(headers))
	}
	for i, h := range headers {
		sent := h.Get("client-request-id")
		if !guidPattern.MatchString(sent) {
			t.Errorf("request %d: client-request-id %q is not a lower-case GUID", i, sent)
		}
		if got := h.Values("return-client-request-id"); len(got) != 1 || got[0] != "true" {
			t.Errorf("request %d: return-client-request-id = %q, want [true]", i, got)
		}
		// This endpoint does not echo, so the token carries the ID that was sent.
		if ids[i] != sent {
			t.Errorf("request %d: Token.ClientRequestID = %q, want the one sent, %q", i, ids[i], sent)
		}
	}
	if headers[0].Get("client-request-id") == headers[1].Get("client-request-id") {
		t.Errorf("two requests carried the same client-request-id %q", headers[0].Get("client-request-id"))
	}
}

// A caller's own transport is wrapped per request, not replaced or cloned: its
// requests still go through it, with the headers, and the caller's client is
// left as it was.
func TestRequestTokenWrapsTheCallersTransport(t *testing.T) {
	srv, seen := headerEndpoint(t, answer(http.StatusOK, "application/json", okBody))
	counting := &countingTransport{base: http.DefaultTransport}
	hc := &http.Client{Transport: counting}
	c := &entra.Client{HTTPClient: hc}
	for range 2 {
		if _, err := c.RequestToken(context.Background(), supportRequest(srv.URL)); err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
	}
	if got := counting.count(); got != 2 {
		t.Errorf("the caller's transport sent %d requests, want 2", got)
	}
	if hc.Transport != counting {
		t.Errorf("the caller's client transport was replaced by %T", hc.Transport)
	}
	for i, h := range seen() {
		if h.Get("client-request-id") == "" || h.Get("return-client-request-id") != "true" {
			t.Errorf("request %d through the caller's transport lacks the client-request-id headers: %v", i, h)
		}
	}
}

type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Bodies as Entra ID sends them: the IDs in their own fields and repeated in the
// description after \r\n.
const (
	invalidSecretBody  = `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '0b9f7c55-8a3e-4d2a-9c61-5f0e7d3b2a10'.\r\nTrace ID: 2f6a3c1d-8b4e-4a7f-9e21-5c0d7b3a1f00\r\nCorrelation ID: 8d1e4b7a-3c2f-4e6d-a9b0-1f5c2e7d9a44\r\nTimestamp: 2026-11-21 11:02:03Z","error_codes":[7000215],"timestamp":"2026-11-21 11:02:03Z","trace_id":"2f6a3c1d-8b4e-4a7f-9e21-5c0d7b3a1f00","correlation_id":"8d1e4b7a-3c2f-4e6d-a9b0-1f5c2e7d9a44","error_uri":"https://login.microsoftonline.com/error?code=7000215"}`
	tenantNotFoundBody = `{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant '6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.\r\nTrace ID: 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\r\nCorrelation ID: 9c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f\r\nTimestamp: 2026-11-21 11:02:03Z","error_codes":[90002],"timestamp":"2026-11-21 11:02:03Z","trace_id":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","correlation_id":"9c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f","error_uri":"https://login.microsoftonline.com/error?code=90002"}`
	serverErrorBody    = `{"error":"server_error","error_description":"AADSTS50033: A transient error has occurred. Please try again.\r\nTrace ID: 5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a1b\r\nCorrelation ID: 1b2a3f4e-5d6c-4b7a-8f9e-0d1c2b3a4f5e\r\nTimestamp: 2026-11-21 11:02:03Z","error_codes":[50033],"timestamp":"2026-11-21 11:02:03Z","trace_id":"5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a1b","correlation_id":"1b2a3f4e-5d6c-4b7a-8f9e-0d1c2b3a4f5e"}`
)

func TestFailureCarriesTheSupportIDs(t *testing.T) {
	tests := []struct {
		name                     string
		status                   int
		contentType, body        string
		echo                     string // client-request-id response header; "=" echoes the one sent
		wantReason               string
		wantTrace, wantCorrelate string
		wantEchoed               string // empty: the one sent
	}{{
		name: "invalid secret", status: http.StatusUnauthorized, contentType: "application/json; charset=utf-8", body: invalidSecretBody, echo: "=",
		wantReason: v1alpha1.ReasonInvalidClientSecret,
		wantTrace:  "2f6a3c1d-8b4e-4a7f-9e21-5c0d7b3a1f00", wantCorrelate: "8d1e4b7a-3c2f-4e6d-a9b0-1f5c2e7d9a44",
	}, {
		name: "tenant not found", status: http.StatusBadRequest, contentType: "application/json; charset=utf-8", body: tenantNotFoundBody,
		wantReason: v1alpha1.ReasonTenantNotFound,
		wantTrace:  "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", wantCorrelate: "9c8d7e6f-5a4b-4c3d-9e2f-1a0b9c8d7e6f",
	}, {
		name: "server error, a proxy echoes its own request ID", status: http.StatusInternalServerError, contentType: "application/json; charset=utf-8", body: serverErrorBody,
		echo: "7f3e2d1c-0b9a-4876-9543-210fedcba987", wantEchoed: "7f3e2d1c-0b9a-4876-9543-210fedcba987",
		wantReason: v1alpha1.ReasonTokenEndpointUnavailable,
		wantTrace:  "5e4f3a2b-1c0d-4e9f-8a7b-6c5d4e3f2a1b", wantCorrelate: "1b2a3f4e-5d6c-4b7a-8f9e-0d1c2b3a4f5e",
	}, {
		name: "plain-text 429 has no IDs", status: http.StatusTooManyRequests, contentType: "text/plain", body: "Too Many Requests",
		wantReason: v1alpha1.ReasonThrottled,
	}, {
		name: "IDs of the wrong type are ignored", status: http.StatusUnauthorized, contentType: "application/json",
		body:       `{"error":"invalid_client","error_codes":[7000215],"trace_id":12,"correlation_id":{"a":1}}`,
		wantReason: v1alpha1.ReasonInvalidClientSecret,
	}, {
		name: "IDs are cleaned up and never carry the secret", status: http.StatusUnauthorized, contentType: "application/json",
		body:       `{"error":"invalid_client","error_codes":[7000215],"trace_id":"abc\r\nInjected: x","correlation_id":"` + testSecret + `"}`,
		wantReason: v1alpha1.ReasonInvalidClientSecret,
		wantTrace:  "abc", wantCorrelate: "[redacted]",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := headerEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
				switch tt.echo {
				case "":
				case "=":
					w.Header().Set("client-request-id", r.Header.Get("client-request-id"))
				default:
					w.Header().Set("client-request-id", tt.echo)
				}
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := (&entra.Client{}).RequestToken(context.Background(), supportRequest(srv.URL))
			var f *entra.Failure
			if !errors.As(err, &f) {
				t.Fatalf("error %v (%T) is not a *Failure", err, err)
			}
			if f.Reason != tt.wantReason {
				t.Errorf("Reason = %s, want %s (message %q)", f.Reason, tt.wantReason, f.Message)
			}
			if f.TraceID != tt.wantTrace || f.CorrelationID != tt.wantCorrelate {
				t.Errorf("TraceID, CorrelationID = %q, %q; want %q, %q", f.TraceID, f.CorrelationID, tt.wantTrace, tt.wantCorrelate)
			}
			want := tt.wantEchoed
			if want == "" {
				want = seen()[0].Get("client-request-id")
			}
			if f.ClientRequestID != want {
				t.Errorf("ClientRequestID = %q, want %q", f.ClientRequestID, want)
			}
			checkStableMessage(t, f)
		})
	}
}

// checkStableMessage checks that the message, which goes into conditions, holds
// none of the IDs that change from one attempt to the next.
func checkStableMessage(t *testing.T, f *entra.Failure) {
	t.Helper()
	for _, id := range []string{f.TraceID, f.CorrelationID, f.ClientRequestID} {
		if id != "" && strings.Contains(f.Message, id) {
			t.Errorf("Message %q contains the ID %q", f.Message, id)
		}
	}
	for _, s := range []string{"Trace ID", "Correlation ID", "Timestamp", "\r", "\n"} {
		if strings.Contains(f.Message, s) {
			t.Errorf("Message %q contains %q", f.Message, s)
		}
	}
}

// With no answer at all, the ID that was sent is all there is, and it is still
// worth having: a request that reached Entra ID shows in the sign-in logs.
func TestFailureWithoutAnswerCarriesTheSentClientRequestID(t *testing.T) {
	srv, seen := headerEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	_, err := (&entra.Client{Timeout: 200 * time.Millisecond}).RequestToken(context.Background(), supportRequest(srv.URL))
	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure", err, err)
	}
	if f.Reason != v1alpha1.ReasonTokenEndpointUnavailable {
		t.Errorf("Reason = %s, want %s", f.Reason, v1alpha1.ReasonTokenEndpointUnavailable)
	}
	if sent := seen()[0].Get("client-request-id"); f.ClientRequestID != sent || !guidPattern.MatchString(sent) {
		t.Errorf("ClientRequestID = %q, want the GUID sent, %q", f.ClientRequestID, sent)
	}
	if f.TraceID != "" || f.CorrelationID != "" {
		t.Errorf("TraceID, CorrelationID = %q, %q without an answer", f.TraceID, f.CorrelationID)
	}
}

// Classify sees only the error: it finds the IDs of the body, but cannot know
// the client-request-id.
func TestClassifyParsesTheSupportIDs(t *testing.T) {
	f := entra.Classify(rawError(http.StatusUnauthorized, invalidSecretBody), testNow)
	if f.TraceID != "2f6a3c1d-8b4e-4a7f-9e21-5c0d7b3a1f00" || f.CorrelationID != "8d1e4b7a-3c2f-4e6d-a9b0-1f5c2e7d9a44" {
		t.Errorf("TraceID, CorrelationID = %q, %q", f.TraceID, f.CorrelationID)
	}
	if f.ClientRequestID != "" {
		t.Errorf("ClientRequestID = %q, want empty", f.ClientRequestID)
	}
	if want := "AADSTS7000215: "; !strings.HasPrefix(f.Message, want) {
		t.Errorf("Message %q does not start with %q", f.Message, want)
	}
	checkStableMessage(t, f)
}
