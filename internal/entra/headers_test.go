package entra_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// paddedTokenEndpoint listens on loopback and answers every request with a 200 and
// a valid token, after about headerBytes of padding headers. It speaks HTTP/1.1 on
// a raw connection so that the whole answer is built once, before the test
// measures allocations, and the server side allocates next to nothing per request.
func paddedTokenEndpoint(t *testing.T, headerBytes int) string {
	t.Helper()
	const body = `{"token_type":"Bearer","expires_in":3599,"access_token":"eyJhbGciOi.padded.sig"}`
	var resp strings.Builder
	resp.WriteString("HTTP/1.1 200 OK\r\n")
	pad := strings.Repeat("a", 4000)
	lineLen := len("X-Pad-0000: \r\n") + len(pad)
	for i := 0; resp.Len()+lineLen <= headerBytes; i++ {
		fmt.Fprintf(&resp, "X-Pad-%04d: %s\r\n", i, pad)
	}
	fmt.Fprintf(&resp, "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	answer := []byte(resp.String())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = conn.Close() }()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				// Fails once the client gives up reading: that is the point.
				_, _ = conn.Write(answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func paddedRequest(authority string) entra.Request {
	return entra.Request{
		AuthorityHost: authority, TenantID: testTenant, ClientID: testClient,
		Credential: entra.ClientSecret(testSecret), Resource: "https://api.security.microsoft.com",
	}
}

// A hostile endpoint (or proxy) sending ~10 MiB of headers, just under Go's own
// default limit, with a valid token after them. The shared client must stop
// reading at MaxResponseHeaderBytes and fail as TokenEndpointUnavailable,
// without holding megabytes of headers.
func TestClientRequestTokenRefusesHugeResponseHeaders(t *testing.T) {
	const hostile = 10<<20 - 128<<10
	authority := paddedTokenEndpoint(t, hostile)
	c := &entra.Client{Timeout: 20 * time.Second}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	tok, err := c.RequestToken(context.Background(), paddedRequest(authority))
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	// A figure, not a verdict: the reason and the allocation below show that it
	// stopped at the limit rather than reading on or waiting for the timeout.
	t.Logf("returned after %v, allocating %d KiB: %v", elapsed, allocated>>10, err)

	var f *entra.Failure
	if !errors.As(err, &f) {
		t.Fatalf("got token %+v, error %v (%T); want a *Failure", tok, err, err)
	}
	if f.Reason != v1alpha1.ReasonTokenEndpointUnavailable || f.Kind != entra.Transient {
		t.Errorf("got %s/%s, want TokenEndpointUnavailable/Transient (message %q)", f.Reason, f.Kind, f.Message)
	}
	if want := fmt.Sprintf("server response headers exceeded %d bytes", entra.MaxResponseHeaderBytes); !strings.Contains(f.Message, want) {
		t.Errorf("Message %q does not contain %q", f.Message, want)
	}
	// Reading the headers whole would allocate at least their 10 MiB.
	if allocated > 4<<20 {
		t.Errorf("RequestToken allocated %d KiB for a %d KiB header, want well under it", allocated>>10, hostile>>10)
	}
}

// Headers a little under the limit are still read, and the token after them used.
func TestClientRequestTokenAcceptsLargeResponseHeadersUnderTheLimit(t *testing.T) {
	authority := paddedTokenEndpoint(t, 60<<10)
	tok, err := (&entra.Client{}).RequestToken(context.Background(), paddedRequest(authority))
	if err != nil {
		t.Fatalf("RequestToken with 60 KiB of headers: %v", err)
	}
	tok.ClientRequestID = "" // a fresh GUID, see supportids_test.go
	if want := (entra.Token{AccessToken: "eyJhbGciOi.padded.sig", TokenType: "Bearer"}); tok != want {
		t.Errorf("token = %+v, want %+v", tok, want)
	}
}
