package entraemu_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

// postWith posts a token request with extra request headers, given as key/value
// pairs.
func (f *fixture) postWith(t *testing.T, path string, header ...string) response {
	t.Helper()
	req := newPost(t, f.srv.URL+path, creds("scope", xdrScope))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return f.do(t, req)
}

func TestEchoesClientRequestIDWhenAsked(t *testing.T) {
	f := newFixture(t)
	const id = "3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
	tests := []struct {
		name   string
		header []string
		want   string
	}{
		{"asked", []string{"client-request-id", id, "return-client-request-id", "true"}, id},
		{"asked in another case", []string{"Client-Request-Id", id, "Return-Client-Request-Id", "True"}, id},
		{"not asked", []string{"client-request-id", id}, ""},
		{"asked for false", []string{"client-request-id", id, "return-client-request-id", "false"}, ""},
		{"asked without an ID", []string{"return-client-request-id", "true"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := f.postWith(t, v2Path(tenantID), tt.header...)
			if ok.status != http.StatusOK {
				t.Fatalf("status %d, body %s", ok.status, ok.body)
			}
			if got := ok.header.Get("client-request-id"); got != tt.want {
				t.Errorf("success: client-request-id = %q, want %q", got, tt.want)
			}
			f.emu.InjectFailures(tenantID, entraemu.ServerError())
			failed := f.postWith(t, v2Path(tenantID), tt.header...)
			if failed.status != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500", failed.status)
			}
			if got := failed.header.Get("client-request-id"); got != tt.want {
				t.Errorf("failure: client-request-id = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRecordsRequestHeaders(t *testing.T) {
	const first, second = "first", "second"
	f := newFixture(t)
	if got := f.emu.LastRequest(tenantID); got != nil {
		t.Errorf("LastRequest before any request = %v, want nil", got)
	}
	f.postWith(t, v2Path(tenantID), "client-request-id", first)
	req := newPost(t, f.srv.URL+v2Path(strings.ToUpper(tenantID)), creds("scope", xdrScope))
	req.Header.Set("client-request-id", second)
	req.SetBasicAuth(clientID, secret)
	f.do(t, req)

	headers := f.emu.RequestHeaders(tenantID)
	if len(headers) != 2 {
		t.Fatalf("RequestHeaders = %d entries, want 2", len(headers))
	}
	if a, b := headers[0].Get("client-request-id"), headers[1].Get("client-request-id"); a != first || b != second {
		t.Errorf("client-request-ids = %q, %q; want first, second (oldest first, tenant ID in any case)", a, b)
	}
	if got := f.emu.LastRequest(tenantID).Get("client-request-id"); got != second {
		t.Errorf("LastRequest client-request-id = %q, want second", got)
	}
	if got := headers[1].Get("Authorization"); got != "" {
		t.Errorf("the recorded headers keep Authorization %q, which carries the secret", got)
	}
	// The caller gets copies.
	headers[1].Set("client-request-id", "changed")
	if got := f.emu.LastRequest(tenantID).Get("client-request-id"); got != second {
		t.Errorf("changing the returned headers changed the record to %q", got)
	}
	if got := f.emu.RequestHeaders("4a1b2c3d-0000-4000-8000-000000000000"); len(got) != 0 {
		t.Errorf("another tenant's headers = %v, want none", got)
	}
}

func TestRecordsAtMost32RequestsPerTenant(t *testing.T) {
	f := newFixture(t)
	for i := range 40 {
		f.postWith(t, v2Path(tenantID), "client-request-id", string(rune('A'+i)))
	}
	headers := f.emu.RequestHeaders(tenantID)
	if len(headers) != 32 {
		t.Fatalf("RequestHeaders = %d entries, want 32", len(headers))
	}
	if first, last := headers[0].Get("client-request-id"), headers[31].Get("client-request-id"); first != string(rune('A'+8)) || last != string(rune('A'+39)) {
		t.Errorf("kept %q … %q, want the last 32", first, last)
	}
}

func TestLastFailureIDs(t *testing.T) {
	f := newFixture(t)
	if trace, corr := f.emu.LastFailureIDs(tenantID); trace != "" || corr != "" {
		t.Errorf("LastFailureIDs before any failure = %q, %q", trace, corr)
	}
	seen := make([]string, 0, 6)
	for _, fail := range []entraemu.Failure{entraemu.ServerError(), {Status: http.StatusUnauthorized, Error: "invalid_client", Code: 7000215, Description: "Invalid client secret provided."}} {
		f.emu.InjectFailures(tenantID, fail)
		resp := f.postWith(t, v2Path(tenantID))
		var body entraError
		if err := json.Unmarshal(resp.body, &body); err != nil {
			t.Fatalf("decoding %s: %v", resp.body, err)
		}
		if !guidRE.MatchString(body.TraceID) || !guidRE.MatchString(body.CorrelationID) {
			t.Errorf("trace_id %q, correlation_id %q are not GUIDs", body.TraceID, body.CorrelationID)
		}
		wantTail := "\r\nTrace ID: " + body.TraceID + "\r\nCorrelation ID: " + body.CorrelationID + "\r\nTimestamp: " + body.Timestamp
		if !strings.HasSuffix(body.Description, wantTail) {
			t.Errorf("error_description %q does not end with %q", body.Description, wantTail)
		}
		trace, corr := f.emu.LastFailureIDs(strings.ToUpper(tenantID))
		if trace != body.TraceID || corr != body.CorrelationID {
			t.Errorf("LastFailureIDs = %q, %q; the body sent %q, %q", trace, corr, body.TraceID, body.CorrelationID)
		}
		seen = append(seen, body.TraceID, body.CorrelationID)
	}
	// The answer to a wrong secret, without any injected failure, too.
	req := newPost(t, f.srv.URL+v2Path(tenantID), creds("scope", xdrScope, "client_secret", "wrong"))
	resp := f.do(t, req)
	var body entraError
	if err := json.Unmarshal(resp.body, &body); err != nil || resp.status != http.StatusUnauthorized {
		t.Fatalf("wrong secret: status %d, body %s, %v", resp.status, resp.body, err)
	}
	if trace, corr := f.emu.LastFailureIDs(tenantID); trace != body.TraceID || corr != body.CorrelationID {
		t.Errorf("after a wrong secret LastFailureIDs = %q, %q; the body sent %q, %q", trace, corr, body.TraceID, body.CorrelationID)
	}
	seen = append(seen, body.TraceID, body.CorrelationID)
	for i := range seen {
		for j := range i {
			if seen[i] == seen[j] {
				t.Errorf("ID %q sent twice: IDs must be fresh per answer", seen[i])
			}
		}
	}

	// A success leaves the IDs of the last failure; a failure without an Entra
	// body clears them.
	f.postWith(t, v2Path(tenantID))
	if trace, _ := f.emu.LastFailureIDs(tenantID); trace != body.TraceID {
		t.Errorf("after a success LastFailureIDs trace = %q, want the last failure's %q", trace, body.TraceID)
	}
	f.emu.InjectFailures(tenantID, entraemu.Throttled(time.Minute))
	f.postWith(t, v2Path(tenantID))
	if trace, corr := f.emu.LastFailureIDs(tenantID); trace != "" || corr != "" {
		t.Errorf("after a plain-text 429 LastFailureIDs = %q, %q, want empty", trace, corr)
	}
}
