// Command entra-emulator serves the Entra ID token endpoint emulator of package
// entraemu over HTTP, for demos and scripts that need a stand-in for
// login.microsoftonline.com: the token endpoints, the signing keys, and each
// tenant's OpenID discovery documents, by tenant ID or by a domain of the tenant's
// `domains` in --config.
//
// It loads apps (secrets, certificates, federated credentials), issuer keys,
// tenants and consents from --config, answers as the sign-in host of
// --cloud (login.microsoftonline.com, or login.microsoftonline.us for USGovHigh and
// DoD: run one per host to emulate both), writes its base URL to --url-file once it
// listens (so that scripts can use a random port), logs one line per request to
// stderr, and stops on SIGINT or SIGTERM.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(logger); err != nil {
		logger.Error("entra-emulator failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on; port 0 picks a free port")
	configFile := flag.String("config", "", "YAML or JSON file of apps, tenants and grants to load")
	urlFile := flag.String("url-file", "", "file to write the base URL (no trailing newline) to once listening")
	latency := flag.Duration("latency", 0, "delay added to every token request")
	replicationDelay := flag.Duration("replication-delay", 0, "how long a new certificate waits before the token endpoint accepts it (AADSTS700027 until then)")
	cloud := flag.String("cloud", string(v1alpha1.CloudPublic),
		"cloud whose sign-in host to answer as: Public or USGov (login.microsoftonline.com), USGovHigh or DoD (login.microsoftonline.us)")
	flag.Parse()
	if entra.AuthorityHost(v1alpha1.Cloud(*cloud)) == "" {
		return fmt.Errorf("--cloud %q: want Public, USGov, USGovHigh or DoD", *cloud)
	}

	// Before anything that needs cleaning up, so that a signal always gets a clean exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	emu, err := entraemu.New(entraemu.Options{})
	if err != nil {
		return err
	}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return err
		}
		cfg, err := entraemu.ParseConfig(data)
		if err != nil {
			return fmt.Errorf("%s: %w", *configFile, err)
		}
		emu.Load(cfg)
	}
	emu.SetLatency(*latency)
	emu.SetReplicationDelay(*replicationDelay)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	baseURL := "http://" + ln.Addr().String()
	if *urlFile != "" {
		if err := writeFileAtomic(*urlFile, baseURL); err != nil {
			_ = ln.Close()
			return err
		}
		// A stale file would send the next script to a port nobody listens on.
		defer func() { _ = os.Remove(*urlFile) }()
	}

	// Microsoft Graph's applications API shares the listener: its paths
	// (/v1.0/...) are no tenant's, so --graph-host can be the same URL.
	mux := http.NewServeMux()
	mux.Handle("/v1.0/", emu.Graph(v1alpha1.Cloud(*cloud)))
	mux.Handle("/", emu.Cloud(v1alpha1.Cloud(*cloud)))
	var handler http.Handler = mux
	srv := &http.Server{Handler: logRequests(logger, handler), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("serving", "url", baseURL, "cloud", *cloud, "as", entra.AuthorityHost(v1alpha1.Cloud(*cloud)))

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests still waiting on an injected delay or latency: drop their
		// connections, as a server going away would, rather than wait them out.
		return srv.Close()
	}
	return nil
}

// writeFileAtomic writes content to a temporary file and renames it into place, so
// that a script polling for the file never reads it half written.
func writeFileAtomic(name, content string) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// logRequests logs one line per request: the tenant, path, status and, for Entra
// errors, the AADSTS code. It never logs headers or bodies, which carry the secrets
// and tokens. Status 0 means no answer: the client gave up, or the shutdown dropped
// the connection.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		tenant, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		logger.Info("request",
			"method", r.Method,
			"tenant", tenant,
			"path", r.URL.Path,
			"status", rec.status,
			"aadsts", rec.aadsts(),
			"duration", time.Since(start))
	})
}

// recorder remembers the status of an answer, and the body of an error answer to
// read its AADSTS code from.
type recorder struct {
	http.ResponseWriter
	status  int
	errBody bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK // what the ResponseWriter assumes without WriteHeader
	}
	if r.status >= http.StatusBadRequest {
		r.errBody.Write(b)
	}
	return r.ResponseWriter.Write(b)
}

// aadsts returns the first AADSTS code of an Entra error body, or 0.
func (r *recorder) aadsts() int {
	var body struct {
		ErrorCodes []int `json:"error_codes"`
	}
	if err := json.Unmarshal(r.errBody.Bytes(), &body); err != nil || len(body.ErrorCodes) == 0 {
		return 0
	}
	return body.ErrorCodes[0]
}
