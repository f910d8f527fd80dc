package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// parallel calls fn for 0..n-1 with at most workers calls at a time.
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range n {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// requestCounter counts the harness's own API requests under the API server's
// verb and resource labels, so that they can be subtracted from its metrics.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]float64
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		c.counts[requestKey(r)]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

func (c *requestCounter) snapshot() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]float64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// requestKey maps a request to "VERB resource[/subresource]" as apiserver_request_total
// labels it: /api/v1/namespaces/ns/secrets/name → GET secrets.
func requestKey(r *http.Request) string {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var segments []string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		segments = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		segments = parts[3:]
	default:
		return r.Method + " " + nonResource
	}
	if len(segments) >= 3 && segments[0] == "namespaces" {
		segments = segments[2:]
	}
	verb := r.Method
	if verb == http.MethodGet && len(segments) == 1 {
		verb = "LIST"
		if r.URL.Query().Get("watch") == "true" {
			verb = "WATCH"
		}
	}
	if len(segments) >= 3 {
		return verb + " " + segments[0] + "/" + segments[2]
	}
	return verb + " " + segments[0]
}

const nonResource = "(non-resource)"

// apiServerMetrics reads apiserver_request_total from the API server's /metrics,
// which needs an authorized client (the admin config).
type apiServerMetrics struct {
	rest    rest.Interface
	harness *requestCounter
}

func newAPIServerMetrics(cfg *rest.Config, harness *requestCounter) (*apiServerMetrics, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &apiServerMetrics{rest: cs.Discovery().RESTClient(), harness: harness}, nil
}

// requestSnapshot is the API server's request counts and, taken just after, the
// harness's own; and the time requests waited in API Priority and Fairness queues,
// by priority level.
type requestSnapshot struct {
	server, harness map[string]float64
	queued          map[string]waitTotal
}

type waitTotal struct {
	seconds  float64
	requests uint64
}

func (m *apiServerMetrics) snapshot(ctx context.Context) (requestSnapshot, error) {
	raw, err := m.rest.Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return requestSnapshot{}, fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	fams, err := parseMetrics(raw, "apiserver_request_total", apfWait)
	if err != nil {
		return requestSnapshot{}, err
	}
	queued := map[string]waitTotal{}
	for _, m := range fams[apfWait].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "priority_level" {
				w := queued[l.GetValue()]
				w.seconds += m.GetHistogram().GetSampleSum()
				w.requests += m.GetHistogram().GetSampleCount()
				queued[l.GetValue()] = w
			}
		}
	}
	server := map[string]float64{}
	for _, s := range samples(fams, "apiserver_request_total") {
		res := s.labels["resource"]
		if res == "" {
			res = nonResource
		} else if sub := s.labels["subresource"]; sub != "" {
			res += "/" + sub
		}
		server[s.labels["verb"]+" "+res] += s.value
	}
	return requestSnapshot{server: server, harness: m.harness.snapshot(), queued: queued}, nil
}

const apfWait = "apiserver_flowcontrol_request_wait_duration_seconds"

// queuedSince is the mean wait in API Priority and Fairness queues per priority
// level between two snapshots, leaving out "exempt" (the harness's admin requests
// and kube-apiserver's own, which never wait).
func (s requestSnapshot) queuedSince(before requestSnapshot) map[string]float64 {
	out := map[string]float64{}
	for level, w := range s.queued {
		if level == "exempt" {
			continue
		}
		if n := w.requests - before.queued[level].requests; n > 0 {
			out[level] = (w.seconds - before.queued[level].seconds) / float64(n)
		}
	}
	return out
}

// minus returns the requests made between two snapshots by anyone but the harness.
// A scrape is counted by the harness when sent and by the server when done, so the
// scrapes at either end cancel out.
func (s requestSnapshot) minus(before requestSnapshot) map[string]float64 {
	out := map[string]float64{}
	for k, v := range s.server {
		if d := v - before.server[k] - (s.harness[k] - before.harness[k]); d != 0 {
			out[k] = d
		}
	}
	return out
}

type sample struct {
	labels map[string]string
	value  float64
}

// parseMetrics parses the named metrics out of a Prometheus text exposition, skipping
// the (large) rest.
func parseMetrics(raw []byte, names ...string) (map[string]*dto.MetricFamily, error) {
	var keep bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if isSampleOf(line, n) || isSampleOf(line, n+"_bucket") || isSampleOf(line, n+"_sum") || isSampleOf(line, n+"_count") || strings.HasPrefix(line, "# TYPE "+n+" ") {
				keep.WriteString(line + "\n")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(&keep)
}

func isSampleOf(line, name string) bool {
	return strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ")
}

func samples(fams map[string]*dto.MetricFamily, name string) []sample {
	fam := fams[name]
	if fam == nil {
		return nil
	}
	out := make([]sample, 0, len(fam.GetMetric()))
	for _, m := range fam.GetMetric() {
		s := sample{labels: map[string]string{}}
		for _, l := range m.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}
		switch {
		case m.Counter != nil:
			s.value = m.GetCounter().GetValue()
		case m.Gauge != nil:
			s.value = m.GetGauge().GetValue()
		default:
			s.value = m.GetUntyped().GetValue()
		}
		out = append(out, s)
	}
	return out
}

func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	total := 0.0
	for _, s := range samples(fams, name) {
		total += s.value
	}
	return total
}

// histogramMean is the mean of a histogram's observations over all its series, and
// how many there were.
func histogramMean(fams map[string]*dto.MetricFamily, name string) (mean float64, count uint64) {
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		total += m.GetHistogram().GetSampleSum()
		count += m.GetHistogram().GetSampleCount()
	}
	if count == 0 {
		return 0, 0
	}
	return total / float64(count), count
}

// report prints "name: value" lines and keeps them for tests.
type report struct {
	w      io.Writer
	values map[string]string
}

func newReport(w io.Writer) *report { return &report{w: w, values: map[string]string{}} }

func (r *report) add(name, format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	r.values[name] = v
	// A figure that cannot be printed is still in values, which the smoke test reads.
	_, _ = fmt.Fprintf(r.w, "%s: %s\n", name, v)
}

func isWrite(verb string) bool {
	switch verb {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY":
		return true
	}
	return false
}

func mib(b float64) float64 { return b / (1 << 20) }

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
