package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tenantcreds/defender-tenant-operator/internal/localcluster"
)

// operator is the manager running as its own process.
type operator struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	metricsURL string
	logPath    string
}

// startOperator starts the manager binary with plain-HTTP metrics on a free loopback
// port, and returns once its controller has synced its caches and started workers.
//
// It does not use localcluster.StartProcess: the harness gives the operator extra
// environment (-operator-env), reads its CPU time and memory from /proc by pid, and,
// having no signal handling to stop it in order, has the kernel kill it instead.
func startOperator(ctx context.Context, bin string, args, env []string, logPath string) (*operator, error) {
	metricsAddr, err := localcluster.FreeLocalAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args = append([]string{
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false",
		"--health-probe-bind-address=0",
	}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	// The operator dies with the harness, however the harness ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	o := &operator{cmd: cmd, exited: make(chan struct{}), metricsURL: "http://" + metricsAddr + "/metrics", logPath: logPath}
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(o.exited) }()

	for {
		log, _ := os.ReadFile(logPath)
		if bytes.Contains(log, []byte(`"Starting workers"`)) {
			return o, nil
		}
		select {
		case <-o.exited:
			return nil, fmt.Errorf("the operator exited at start; its log:\n%s", log)
		case <-ctx.Done():
			_ = o.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the operator with SIGTERM, as Kubernetes does, and waits for it.
func (o *operator) stop() error {
	select {
	case <-o.exited:
		return nil
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = o.cmd.Process.Kill()
		<-o.exited
		return errors.New("the operator did not stop within 30s of SIGTERM and was killed")
	}
}

func (o *operator) metrics(ctx context.Context, names ...string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the operator's /metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return parseMetrics(raw, names...)
}

// waitQuiet waits until at least n reconciles have completed since the operator
// started and it has been idle for a second (work queue empty, no reconcile running,
// none completed), and returns when that idle spell began, to within 250 ms.
func (o *operator) waitQuiet(ctx context.Context, n int) (time.Time, error) {
	last, quiet, since := -1.0, 0, time.Time{}
	for quiet < 4 {
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return time.Time{}, err
		}
		fams, err := o.metrics(ctx, "controller_runtime_reconcile_total", "workqueue_depth", "controller_runtime_active_workers")
		if err != nil {
			return time.Time{}, err
		}
		total := sum(fams, "controller_runtime_reconcile_total")
		if total >= float64(n) && total == last && sum(fams, "workqueue_depth") == 0 && sum(fams, "controller_runtime_active_workers") == 0 {
			quiet++
		} else {
			quiet, since = 0, time.Now()
		}
		last = total
	}
	return since, nil
}

// memoryUse is the operator's memory: VmRSS, its anonymous part (RssAnon: heap,
// stacks; the rest is mostly the binary's mapped pages) and the Go heap in use.
type memoryUse struct{ rss, anon, heap float64 }

func (o *operator) memory(ctx context.Context) (memoryUse, error) {
	var m memoryUse
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", o.cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "VmRSS:" && f[0] != "RssAnon:") {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return m, err
		}
		if f[0] == "VmRSS:" {
			m.rss = kb * 1024
		} else {
			m.anon = kb * 1024
		}
	}
	fams, err := o.metrics(ctx, "go_memstats_heap_inuse_bytes")
	if err != nil {
		return m, err
	}
	m.heap = sum(fams, "go_memstats_heap_inuse_bytes")
	return m, nil
}

// cpu returns the operator's user plus system CPU time so far.
func (o *operator) cpu() (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", o.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are the 14th and
	// 15th fields of the whole line, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
