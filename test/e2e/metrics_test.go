//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Hostile scrapers must not make the operator keep memory per request. The HTTP
// method becomes the SubjectAccessReview's verb, and the bearer string is sent in
// a TokenReview: attributes of a megabyte must not end up in a cache, nor must
// every distinct token. Go's server already refuses request headers beyond 1 MB
// (MaxHeaderBytes), so each request below stays just under that.
func TestMetricsEndpointHeapStaysBoundedUnderHostileRequests(t *testing.T) {
	const (
		requests   = 200       // of each kind
		methodSize = 1_000_000 // bytes of each distinct HTTP method, sent with the scraper's token
		tokenSize  = 512 << 10 // bytes of each distinct bearer string
		maxGrowth  = 32 << 20  // bytes of Go heap
	)
	// Each request has a timeout of its own (hostileRequest), a cutoff for an
	// operator that stops answering; how long they all took is logged, not judged.
	ctx := context.Background()
	before := heapInUse(t)

	// One request at a time: what the operator keeps is then what it retains,
	// not what a few requests in flight hold, nor the garbage they leave until the
	// next collection.
	padding := strings.Repeat("A", methodSize-8)
	codes := map[string]map[int]int{"method": {}, "token": {}}
	start := time.Now()
	for i := range requests {
		for kind, req := range map[string]struct{ method, token string }{
			"method": {padding + fmt.Sprintf("%08d", i), w.metricsToken},
			"token":  {http.MethodGet, randomBearer(t, tokenSize)},
		} {
			code, err := hostileRequest(ctx, req.method, req.token)
			if err != nil {
				t.Fatal(err)
			}
			codes[kind][code]++
		}
	}
	t.Logf("%d requests in %s; status codes: distinct 1 MB methods %v, distinct %d KiB bearer strings %v",
		2*requests, time.Since(start).Round(time.Millisecond), codes["method"], tokenSize>>10, codes["token"])
	// Each request must have reached the filter and been refused there: a 431
	// would mean Go's server refused it before the operator saw it, and then the
	// test proves nothing. A bearer string the API server rejects gets 500 from
	// controller-runtime's filter (401 from some other filters).
	if codes["method"][http.StatusForbidden] != requests {
		t.Errorf("requests with a 1 MB method and the scraper's token: %v, want %d × 403", codes["method"], requests)
	}
	if codes["token"][http.StatusUnauthorized]+codes["token"][http.StatusInternalServerError] != requests {
		t.Errorf("requests with distinct bearer strings: %v, want %d × 401 or 500", codes["token"], requests)
	}

	after := heapInUse(t)
	nextGC, _ := sample(fetchMetrics(t), "go_memstats_next_gc_bytes")
	t.Logf("Go heap in use: %.1f MiB before, %.1f MiB after (%+.1f MiB); next GC at %.1f MiB",
		mib(before), mib(after), mib(after-before), mib(nextGC))
	if after-before >= maxGrowth {
		t.Errorf("the operator's heap grew by %.1f MiB, want less than %d MiB", mib(after-before), maxGrowth>>20)
	}
	// The operator still serves its scraper.
	fetchMetrics(t)
}

// heapInUse is the operator's go_memstats_heap_inuse_bytes, the least of three
// scrapes a moment apart.
func heapInUse(t *testing.T) float64 {
	t.Helper()
	least := -1.0
	for i := range 3 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		v, ok := sample(fetchMetrics(t), "go_memstats_heap_inuse_bytes")
		if !ok {
			t.Fatal("/metrics has no go_memstats_heap_inuse_bytes")
		}
		if least < 0 || v < least {
			least = v
		}
	}
	return least
}

// sample is the value of an unlabelled metric in a Prometheus text exposition.
func sample(body, name string) (float64, bool) {
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func mib(b float64) float64 { return b / (1 << 20) }

// randomBearer returns a distinct bearer string of n bytes.
func randomBearer(t *testing.T, n int) string {
	raw := make([]byte, n*3/4)
	if _, err := rand.Read(raw); err != nil {
		t.Error(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// hostileRequest sends method /metrics with a bearer token and returns the status.
func hostileRequest(ctx context.Context, method, token string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, w.metricsURL, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := metricsClient.Do(req)
	if err != nil {
		if len(method) > 16 {
			method = method[:16] + "…"
		}
		return 0, errors.Join(errors.New(method+" "+w.metricsURL), err)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
