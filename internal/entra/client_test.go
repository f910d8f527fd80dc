package entra_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// testSecret contains characters that form encoding changes, so that scrubbing
// is tested in both spellings.
const testSecret = "Xy8Q~s3cr3t+value/with=special&chars"

// recordedRequest is what the test token endpoint saw.
type recordedRequest struct {
	method, path, contentType, authorization string
	form                                     url.Values
}

// tokenEndpoint is an httptest server that records every request and answers
// with respond.
func tokenEndpoint(t *testing.T, respond http.HandlerFunc) (*httptest.Server, func() []recordedRequest) {
	t.Helper()
	var mu sync.Mutex
	var seen []recordedRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		mu.Lock()
		seen = append(seen, recordedRequest{
			method:        r.Method,
			path:          r.URL.Path,
			contentType:   r.Header.Get("Content-Type"),
			authorization: r.Header.Get("Authorization"),
			form:          form,
		})
		mu.Unlock()
		respond(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []recordedRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]recordedRequest(nil), seen...)
	}
}

func answer(status int, contentType, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func TestClientRequestToken(t *testing.T) {
	const resource = "https://api.security.microsoft.com/"
	longEcho := strings.Repeat("x", 190) + testSecret // the secret straddles the 200-character cut
	tests := []struct {
		name          string
		respond       http.HandlerFunc
		ownHTTPClient bool // use the server's own client, which follows redirects
		wantToken     entra.Token
		wantReason    string // empty: success
		wantRetry     time.Duration
		wantInMessage string
	}{
		{
			name:      "v2 answer with numeric expires_in",
			respond:   answer(200, "application/json; charset=utf-8", `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJhbGciOi.v2.sig"}`),
			wantToken: entra.Token{AccessToken: "eyJhbGciOi.v2.sig", TokenType: "Bearer"},
		},
		{
			name:      "v1-style answer with quoted expires_in",
			respond:   answer(200, "application/json", `{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1622089429","not_before":"1622085529","resource":"https://api.security.microsoft.com","access_token":"eyJhbGciOi.v1.sig"}`),
			wantToken: entra.Token{AccessToken: "eyJhbGciOi.v1.sig", TokenType: "Bearer"},
		},
		{
			name:      "answer without expires_in or token_type",
			respond:   answer(200, "application/json", `{"access_token":"eyJhbGciOi.bare.sig"}`),
			wantToken: entra.Token{AccessToken: "eyJhbGciOi.bare.sig", TokenType: "Bearer"},
		},
		{
			name:          "invalid client secret",
			respond:       answer(401, "application/json", `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215]}`),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantInMessage: "AADSTS7000215",
		},
		{
			name:          "throttled with a plain-text body",
			respond:       answer(429, "text/plain", "Too many requests", "Retry-After", "60"),
			wantReason:    v1alpha1.ReasonThrottled,
			wantRetry:     time.Minute,
			wantInMessage: "429",
		},
		{
			name:          "server error",
			respond:       answer(502, "text/html", "<html>Bad Gateway</html>"),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantInMessage: "HTTP 502",
		},
		{
			name:          "2xx answer without access_token",
			respond:       answer(200, "application/json", `{"token_type":"Bearer","expires_in":3599}`),
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantInMessage: "missing access_token",
		},
		{
			name: "secret echoed by a proxy is scrubbed",
			respond: answer(400, "application/json", fmt.Sprintf(`{"error":"invalid_request","error_description":%q}`,
				"AADSTS900144: echo client_secret="+url.QueryEscape(testSecret)+" raw "+testSecret)),
			wantReason:    v1alpha1.ReasonTokenRequestRejected,
			wantInMessage: "[redacted]",
		},
		{
			name:          "secret echoed across the shortening cut is scrubbed",
			respond:       answer(401, "application/json", fmt.Sprintf(`{"error":"invalid_client","error_description":%q}`, longEcho)),
			wantReason:    v1alpha1.ReasonInvalidClientSecret,
			wantInMessage: "[redacted]",
		},
		{
			name: "redirect is not followed, so the secret is not resent",
			respond: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
			},
			ownHTTPClient: true,
			wantReason:    v1alpha1.ReasonTokenEndpointUnavailable,
			wantInMessage: "HTTP 307",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, requests := tokenEndpoint(t, tt.respond)
			c := &entra.Client{}
			if tt.ownHTTPClient {
				c.HTTPClient = srv.Client()
			}
			req := entra.Request{
				AuthorityHost: srv.URL,
				TenantID:      testTenant,
				ClientID:      testClient,
				Credential:    entra.ClientSecret(testSecret),
				Resource:      resource,
			}

			// Twice, to catch x/oauth2 probing auth styles or caching per URL.
			const calls = 2
			for range calls {
				tok, err := c.RequestToken(context.Background(), req)
				checkResult(t, tok, err, tt.wantToken, tt.wantReason, tt.wantRetry, tt.wantInMessage)
			}

			got := requests()
			if len(got) != calls {
				t.Fatalf("token endpoint got %d requests for %d calls, want one each", len(got), calls)
			}
			wantForm := url.Values{
				"grant_type":    {"client_credentials"},
				"client_id":     {testClient},
				"client_secret": {testSecret},
				"scope":         {"https://api.security.microsoft.com/.default"},
			}
			for _, r := range got {
				if r.method != http.MethodPost || r.path != "/"+testTenant+"/oauth2/v2.0/token" {
					t.Errorf("request %s %s, want POST /%s/oauth2/v2.0/token", r.method, r.path, testTenant)
				}
				if r.authorization != "" {
					t.Errorf("Authorization header %q sent, want credentials only in the body", r.authorization)
				}
				if r.contentType != "application/x-www-form-urlencoded" {
					t.Errorf("Content-Type = %q", r.contentType)
				}
				if fmt.Sprint(r.form) != fmt.Sprint(wantForm) {
					t.Errorf("form = %v, want %v", r.form, wantForm)
				}
			}
		})
	}
}

func checkResult(t *testing.T, tok entra.Token, err error, wantToken entra.Token, wantReason string, wantRetry time.Duration, wantInMessage string) {
	t.Helper()
	if wantReason == "" {
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		if tok.ClientRequestID == "" {
			t.Error("token has no ClientRequestID")
		}
		tok.ClientRequestID = "" // a fresh GUID, see supportids_test.go
		if tok != wantToken {
			t.Errorf("token = %+v, want %+v", tok, wantToken)
		}
		return
	}
	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure", err, err)
	}
	if f.Reason != wantReason || f.RetryAfter != wantRetry {
		t.Errorf("got %s, RetryAfter %v; want %s, %v (message %q)", f.Reason, f.RetryAfter, wantReason, wantRetry, f.Message)
	}
	if !strings.Contains(f.Message, wantInMessage) {
		t.Errorf("Message %q does not contain %q", f.Message, wantInMessage)
	}
	for _, leak := range []string{testSecret, url.QueryEscape(testSecret), testSecret[:12]} {
		if strings.Contains(f.Error(), leak) || strings.Contains(f.ErrorCode, leak) {
			t.Errorf("failure leaks the secret (%q): %q", leak, f.Error())
		}
	}
	if tok != (entra.Token{}) {
		t.Errorf("token = %+v alongside an error, want zero", tok)
	}
}

// The date is 90 seconds after the fake clock's time, and nowhere near that from
// the machine's clock, so only a Client that asks its Clock gets 90 seconds.
func TestClientRequestTokenRetryAfterDateUsesClock(t *testing.T) {
	retryAt := testNow.Add(90 * time.Second).Format(http.TimeFormat)
	srv, _ := tokenEndpoint(t, answer(429, "text/plain", "Too many requests", "Retry-After", retryAt))

	c := &entra.Client{Clock: clocktesting.NewFakePassiveClock(testNow)}
	_, err := c.RequestToken(context.Background(), entra.Request{
		AuthorityHost: srv.URL, TenantID: testTenant, ClientID: testClient,
		Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
	})
	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure", err, err)
	}
	if f.Reason != v1alpha1.ReasonThrottled || f.RetryAfter != 90*time.Second {
		t.Errorf("got %s, RetryAfter %v; want %s, 1m30s", f.Reason, f.RetryAfter, v1alpha1.ReasonThrottled)
	}
}

func TestClientRequestTokenHonoursTimeout(t *testing.T) {
	// The endpoint answers only when the test ends: RequestToken can return before
	// then only because the client gave up.
	release := make(chan struct{})
	clientGaveUp := make(chan struct{})
	srv, requests := tokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(clientGaveUp) // one request only: the test fails on a second
		case <-release:
		}
	})
	defer close(release) // runs before the server's Cleanup closes it

	const timeout = 200 * time.Millisecond
	// The deadline the request is sent with says which timeout bounds it: at most
	// timeout ahead when it is this one, DefaultTimeout ahead when it is not.
	var sentWithin atomic.Int64
	send := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		deadline, ok := req.Context().Deadline()
		if !ok {
			return nil, errors.New("the token request has no deadline")
		}
		sentWithin.Store(int64(time.Until(deadline)))
		return http.DefaultTransport.RoundTrip(req)
	})
	c := &entra.Client{Timeout: timeout, HTTPClient: &http.Client{Transport: send}}
	start := time.Now()
	_, err := c.RequestToken(context.Background(), entra.Request{
		AuthorityHost: srv.URL, TenantID: testTenant, ClientID: testClient,
		Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
	})
	t.Logf("RequestToken returned after %v", time.Since(start))

	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure", err, err)
	}
	if f.Reason != v1alpha1.ReasonTokenEndpointUnavailable || f.Kind != entra.Transient {
		t.Errorf("got %s/%s, want TokenEndpointUnavailable/Transient", f.Reason, f.Kind)
	}
	if !strings.Contains(f.Message, "timed out") {
		t.Errorf("Message %q does not say the request timed out", f.Message)
	}
	if left := time.Duration(sentWithin.Load()); left <= 0 || left > timeout {
		t.Errorf("the request was sent with its deadline %v ahead, want at most the %v timeout", left, timeout)
	}
	if n := len(requests()); n != 1 {
		t.Errorf("token endpoint got %d requests, want 1", n)
	}
	// The endpoint sees the connection go once the client has given up.
	select {
	case <-clientGaveUp:
	case <-time.After(10 * time.Second): // a cutoff for a client that never gives up
		t.Error("the token endpoint never saw the client give up")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func TestClientRequestTokenConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	authority := srv.URL
	srv.Close() // nothing listens there any more

	_, err := (&entra.Client{}).RequestToken(context.Background(), entra.Request{
		AuthorityHost: authority, TenantID: testTenant, ClientID: testClient,
		Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
	})
	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("error %v (%T) is not a *Failure", err, err)
	}
	if f.Reason != v1alpha1.ReasonTokenEndpointUnavailable || f.StatusCode != 0 {
		t.Errorf("got %s with status %d, want TokenEndpointUnavailable with none", f.Reason, f.StatusCode)
	}
	if !strings.Contains(f.Message, "Could not reach") {
		t.Errorf("Message %q does not say the endpoint was unreachable", f.Message)
	}
}

func TestClientRequestTokenReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(answer(200, "application/json", `{"access_token":"eyJ.a.b","expires_in":3599}`))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	c := &entra.Client{}
	for range 5 {
		if _, err := c.RequestToken(context.Background(), entra.Request{
			AuthorityHost: srv.URL, TenantID: testTenant, ClientID: testClient,
			Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
		}); err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 sequential requests opened %d connections, want 1", n)
	}
}

func TestRequestDoesNotPrintTheSecret(t *testing.T) {
	req := entra.Request{
		AuthorityHost: "https://login.microsoftonline.com", TenantID: testTenant,
		ClientID: testClient, Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
	}
	js, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(req), fmt.Sprintf("%+v", req), fmt.Sprintf("%#v", req), fmt.Sprintf("%v", &req), string(js)} {
		if strings.Contains(out, testSecret) {
			t.Errorf("%q contains the client secret", out)
		}
		if !strings.Contains(out, testTenant) {
			t.Errorf("%q does not describe the request", out)
		}
	}
}
