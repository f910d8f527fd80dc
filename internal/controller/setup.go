// Package controller wires the operator's controllers into a manager: the
// indexes they share, the credential Reader they share, and one controller per
// kind.
package controller

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defenderapp"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/defendertenant"
	"github.com/tenantcreds/defender-tenant-operator/internal/controller/manager"
	"github.com/tenantcreds/defender-tenant-operator/internal/credential"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// Config is what the operator's flags decide for its controllers.
type Config struct {
	Clock clock.PassiveClock
	Entra entra.Requester
	// Authorities is --authority-host; nil sends every cloud to its sign-in host.
	Authorities entra.Authorities
	// Graph rolls the keys of managed certificates; GraphHosts is --graph-host,
	// nil sending every cloud to its Microsoft Graph.
	Graph                            entra.KeyRoller
	GraphHosts                       entra.GraphHosts
	AllowedResources                 entra.AllowList
	SecretTemplateAnnotationPrefixes []string
	AdminConsentRedirectURI          string
	// ClusterApps: the operator may watch ClusterDefenderApps and namespaces
	// (manager.MayServeClusterApps).
	ClusterApps               bool
	ClusterResourceNamespace  string
	WorkloadIdentityAudiences []string
	OperatorServiceAccount    types.NamespacedName
	MaxConcurrentReconciles   int
	// EventSource names the operator in the Events it records.
	EventSource string
}

// Controllers are the reconcilers Setup registered.
type Controllers struct {
	Tenants *defendertenant.Reconciler
	Apps    []*defenderapp.Reconciler
	// Summaries keep each app kind's status.tenants.
	Summaries []*defenderapp.SummaryReconciler
}

// Setup registers the indexes, then the DefenderTenant controller and, per app
// kind the operator may watch, one app controller (all sharing one credential
// Reader) and one controller of the app's tenants summary.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) (*Controllers, error) {
	if err := manager.RegisterIndexes(ctx, mgr.GetFieldIndexer(), cfg.ClusterApps); err != nil {
		return nil, fmt.Errorf("registering the field indexes: %w", err)
	}
	credentials := &credential.Reader{
		APIReader:                 mgr.GetAPIReader(),
		SecretMetadata:            mgr.GetCache(),
		Client:                    mgr.GetClient(),
		WorkloadIdentityAudiences: cfg.WorkloadIdentityAudiences,
		OperatorServiceAccount:    cfg.OperatorServiceAccount,
	}
	recorder := mgr.GetEventRecorder(cfg.EventSource)
	tenants := &defendertenant.Reconciler{
		Client:                           mgr.GetClient(),
		APIReader:                        mgr.GetAPIReader(),
		SecretMetadata:                   mgr.GetCache(),
		Clock:                            cfg.Clock,
		Entra:                            cfg.Entra,
		Authorities:                      cfg.Authorities,
		AllowedResources:                 cfg.AllowedResources,
		SecretTemplateAnnotationPrefixes: cfg.SecretTemplateAnnotationPrefixes,
		AdminConsentRedirectURI:          cfg.AdminConsentRedirectURI,
		ClusterApps:                      cfg.ClusterApps,
		ClusterResourceNamespace:         cfg.ClusterResourceNamespace,
		Credentials:                      credentials,
		Recorder:                         recorder,
		MaxConcurrentReconciles:          cfg.MaxConcurrentReconciles,
	}
	if err := tenants.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the DefenderTenant controller: %w", err)
	}
	out := &Controllers{Tenants: tenants}
	kinds := []v1alpha1.AppKind{v1alpha1.AppKindDefenderApp}
	if cfg.ClusterApps {
		kinds = append(kinds, v1alpha1.AppKindClusterDefenderApp)
	}
	for _, kind := range kinds {
		apps := &defenderapp.Reconciler{
			Client:                   mgr.GetClient(),
			Credentials:              credentials,
			Clock:                    cfg.Clock,
			Recorder:                 recorder,
			Kind:                     kind,
			ClusterResourceNamespace: cfg.ClusterResourceNamespace,
			APIReader:                mgr.GetAPIReader(),
			Entra:                    cfg.Entra,
			Authorities:              cfg.Authorities,
			Graph:                    cfg.Graph,
			GraphHosts:               cfg.GraphHosts,
		}
		if err := apps.SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("setting up the %s controller: %w", kind, err)
		}
		out.Apps = append(out.Apps, apps)
		summaries := &defenderapp.SummaryReconciler{Client: mgr.GetClient(), Clock: cfg.Clock, Kind: kind}
		if err := summaries.SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("setting up the %s tenants summary controller: %w", kind, err)
		}
		out.Summaries = append(out.Summaries, summaries)
	}
	return out, nil
}
