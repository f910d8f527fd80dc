// Command manager runs the defender-tenant-operator.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defendertenant"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

type options struct {
	metricsAddr                      string
	metricsSecure                    bool
	metricsCertPath                  string
	metricsCertName                  string
	metricsCertKey                   string
	probeAddr                        string
	leaderElect                      bool
	leaderElectNamespace             string
	leaseDuration                    time.Duration
	renewDeadline                    time.Duration
	retryPeriod                      time.Duration
	authorityHost                    string
	graphHost                        string
	adminConsentRedirectURI          string
	allowedResources                 string
	secretTemplateAnnotationPrefixes string
	workloadIDAudiences              string
	watchNamespaces                  string
	clusterResourceNS                string
	maxConcurrentReconciles          int
	qps                              float64
	burst                            int
}

// bindFlags defines the manager's flags on fs, to be parsed into o.
func bindFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; \"0\" disables it. Use :8080 with --metrics-secure=false for plain HTTP.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, with authentication and authorization by the API server.")
	fs.StringVar(&o.metricsCertPath, "metrics-cert-path", "", "Directory with the metrics serving certificate (for example cert-manager's Secret, mounted); empty serves a self-signed one.")
	fs.StringVar(&o.metricsCertName, "metrics-cert-name", "tls.crt", "Certificate file in --metrics-cert-path.")
	fs.StringVar(&o.metricsCertKey, "metrics-cert-key", "tls.key", "Private key file in --metrics-cert-path.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica mints tokens.")
	fs.StringVar(&o.leaderElectNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease; defaults to the operator's own namespace when running in a cluster.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a standby waits before taking over a Lease that is not renewed.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew before it gives up leading (and exits).")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often leader election clients retry.")
	fs.StringVar(&o.authorityHost, "authority-host", "", "Replace the Entra ID authority host (air-gapped proxies, emulators): one URL for every cloud, or CLOUD=URL,CLOUD=URL to replace clouds one by one (Public, USGov, USGovHigh, DoD). Plain http is accepted only for loopback hosts.")
	fs.StringVar(&o.graphHost, "graph-host", "", "Replace Microsoft Graph's host for managed certificate rotation (proxies, emulators): one URL for every cloud, or CLOUD=URL,CLOUD=URL to replace clouds one by one. Plain http is accepted only for loopback hosts.")
	fs.StringVar(&o.adminConsentRedirectURI, "admin-consent-redirect-uri", "", "redirect_uri of the admin consent links in status.adminConsentURL; it must be a Web redirect URI registered on the app (Microsoft's partner guide uses https://portal.azure.com).")
	fs.StringVar(&o.allowedResources, "allowed-resources", strings.Join(entra.DefaultAllowedResources, ","), "Comma list of resources a DefenderTenant may request tokens for.")
	fs.StringVar(&o.secretTemplateAnnotationPrefixes, "secret-template-annotation-prefixes", strings.Join(defendertenant.DefaultSecretTemplateAnnotationPrefixes, ","), "Comma list of prefixes that the annotation keys of a DefenderTenant's spec.secretTemplate must start with; empty allows none.")
	fs.StringVar(&o.workloadIDAudiences, "workload-identity-audiences", strings.Join(credential.DefaultWorkloadIdentityAudiences, ","), "Comma list of audiences a ClusterDefenderApp's workload identity may request ServiceAccount tokens for; never add the API server's own.")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma list of namespaces to watch; empty watches all.")
	fs.StringVar(&o.clusterResourceNS, "cluster-resource-namespace", "", "Namespace where ClusterDefenderApp credentials (Secrets, ServiceAccounts) live; default the operator's own namespace (POD_NAMESPACE), else "+credential.DefaultClusterResourceNamespace+".")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", 10, "DefenderTenants reconciled (and token requests made) in parallel.")
	// A burst of new tenants costs about five requests each; with client-go's usual
	// limits the rate limiter, not the API server, sets how long they wait (docs/performance.md).
	// The API server's priority and fairness still protects it.
	fs.Float64Var(&o.qps, "kube-api-qps", 500, "Queries per second to the Kubernetes API server.")
	fs.IntVar(&o.burst, "kube-api-burst", 1000, "Burst of queries to the Kubernetes API server.")
}

func main() {
	var o options
	bindFlags(flag.CommandLine, &o)
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	zapOpts.Level = manager.CapLogLevel(zapOpts.Level)
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(o); err != nil {
		ctrl.Log.Error(err, "Operator stopped")
		os.Exit(1)
	}
}

func run(o options) error {
	log := ctrl.Log.WithName("setup")
	config, err := newConfig(o, os.Getenv)
	if err != nil {
		return err
	}
	clusterResourceNS := config.ClusterResourceNamespace

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	missing, err := manager.MayServeClusterApps(context.Background(), cfg, clusterResourceNS)
	if err != nil {
		return fmt.Errorf("checking the operator's permissions: %w", err)
	}
	operatorSA, err := credential.OperatorServiceAccount(context.Background(), cfg)
	if err != nil {
		return fmt.Errorf("asking the API server who the operator is: %w", err)
	}
	config.ClusterApps, config.OperatorServiceAccount = missing == "", operatorSA
	if !config.ClusterApps {
		log.Info("Not serving ClusterDefenderApps: this operator may not "+missing+
			" (a namespaced install, or config/rbac/cluster_resources_role.yaml is not bound in the cluster resource namespace)",
			"clusterResourceNamespace", clusterResourceNS)
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst

	metricsOpts := metricsserver.Options{
		BindAddress:   o.metricsAddr,
		SecureServing: o.metricsSecure,
		// HTTP/2 stays off: it is exposed to the Rapid Reset and Stream Cancellation CVEs.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if o.metricsSecure {
		// Each scrape's bearer token is checked by the API server (TokenReview and
		// SubjectAccessReview), with k8s.io/apiserver's bounded caches.
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	var metricsCert *certwatcher.CertWatcher
	if o.metricsCertPath != "" {
		// Watched, so that a certificate cert-manager renews is served without a restart.
		metricsCert, err = certwatcher.New(filepath.Join(o.metricsCertPath, o.metricsCertName), filepath.Join(o.metricsCertPath, o.metricsCertKey))
		if err != nil {
			return fmt.Errorf("loading the metrics certificate: %w", err)
		}
		metricsOpts.TLSOpts = append(metricsOpts.TLSOpts, func(c *tls.Config) { c.GetCertificate = metricsCert.GetCertificate })
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "defender-tenant-operator.tenantcreds.io",
		LeaderElectionNamespace:       o.leaderElectNamespace,
		LeaseDuration:                 &o.leaseDuration,
		RenewDeadline:                 &o.renewDeadline,
		RetryPeriod:                   &o.retryPeriod,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         manager.CacheOptions(splitList(o.watchNamespaces), clusterResourceNS),
		Client:                        manager.ClientOptions(),
	})
	if err != nil {
		return err
	}
	if metricsCert != nil {
		if err := mgr.Add(metricsCert); err != nil {
			return err
		}
	}

	ctx := ctrl.SetupSignalHandler()
	if _, err := controller.Setup(ctx, mgr, config); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting operator", "authorityOverrides", config.Authorities.String(), "graphOverrides", config.GraphHosts.String(), "allowedResources", config.AllowedResources.String(), "secretTemplateAnnotationPrefixes", config.SecretTemplateAnnotationPrefixes, "watchNamespaces", o.watchNamespaces,
		"clusterResourceNamespace", clusterResourceNS, "workloadIdentityAudiences", config.WorkloadIdentityAudiences, "operatorServiceAccount", operatorSA.String())
	return mgr.Start(ctx)
}

// newConfig is what the flags and the environment (read through getenv) decide
// for the controllers; run adds what it learns from the API server.
func newConfig(o options, getenv func(string) string) (controller.Config, error) {
	allowed, err := entra.ParseAllowList(o.allowedResources)
	if err != nil {
		return controller.Config{}, fmt.Errorf("--allowed-resources: %w", err)
	}
	var authorities entra.Authorities
	if o.adminConsentRedirectURI != "" {
		if _, err := entra.ParseRedirectURI(o.adminConsentRedirectURI); err != nil {
			return controller.Config{}, fmt.Errorf("--admin-consent-redirect-uri: %w", err)
		}
	}
	if o.authorityHost != "" {
		if authorities, err = entra.ParseAuthorities(o.authorityHost); err != nil {
			return controller.Config{}, fmt.Errorf("--authority-host: %w", err)
		}
	}
	var graphHosts entra.GraphHosts
	if o.graphHost != "" {
		if graphHosts, err = entra.ParseGraphHosts(o.graphHost); err != nil {
			return controller.Config{}, fmt.Errorf("--graph-host: %w", err)
		}
	}
	workloadIDAudiences := splitList(o.workloadIDAudiences)
	if len(workloadIDAudiences) == 0 {
		return controller.Config{}, errors.New("--workload-identity-audiences: list at least one audience")
	}
	return controller.Config{
		Clock:                            clock.RealClock{},
		Entra:                            &entra.Client{},
		Authorities:                      authorities,
		Graph:                            &entra.GraphClient{},
		GraphHosts:                       graphHosts,
		AllowedResources:                 allowed,
		SecretTemplateAnnotationPrefixes: splitList(o.secretTemplateAnnotationPrefixes),
		AdminConsentRedirectURI:          o.adminConsentRedirectURI,
		ClusterResourceNamespace:         cmp.Or(o.clusterResourceNS, getenv("POD_NAMESPACE"), credential.DefaultClusterResourceNamespace),
		WorkloadIdentityAudiences:        workloadIDAudiences,
		MaxConcurrentReconciles:          o.maxConcurrentReconciles,
		EventSource:                      "defender-tenant-operator",
	}, nil
}

func splitList(csv string) []string {
	var out []string
	for _, s := range strings.Split(csv, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
