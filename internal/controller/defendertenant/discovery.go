package defendertenant

import (
	"context"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
)

// When Entra ID does not find a tenant (TenantNotFound), the cause is most often a
// tenant of another cloud: a GCC High or DoD tenant asked at the commercial sign-in
// host, or the reverse. OpenID discovery, which needs no credential, says where the
// tenant lives, so the condition can name the cloud instead of listing them all.
//
// Discovery is asked once per failure episode: from the first TenantNotFound of a
// tenant until one of its token requests ends otherwise. Its answer (a cloud, or
// nothing when discovery did not find the tenant or failed) is kept with what it
// was asked for, and asked again only when the tenant ID, the cloud or the sign-in
// host changes. So a tenant that keeps failing costs one discovery request, and
// memory holds one small entry per tenant that is failing now.

// discoveryTimeout bounds the discovery request: it only improves a message, so it
// must not hold a reconcile worker for long.
const discoveryTimeout = 10 * time.Second

// discoveryMemo is what discovery said of a tenant Entra ID did not find.
type discoveryMemo struct {
	// tenantID, authority and cloud are what it was asked for.
	tenantID  string
	authority string
	cloud     v1alpha1.Cloud
	// found is the cloud discovery places the tenant in; empty when it did not
	// find the tenant, failed, or named a cloud the operator does not serve.
	found v1alpha1.Cloud
}

// discoverCloud returns the cloud OpenID discovery places the tenant in, asking the
// sign-in host of the tenant's cloud only when this failure episode has not asked
// yet. It is act's I/O, made after a token request failed with TenantNotFound.
func (r *Reconciler) discoverCloud(ctx context.Context, obs *observation) v1alpha1.Cloud {
	key := keyOf(obs.tenant.Namespace, obs.tenant.Name)
	asked := discoveryMemo{tenantID: obs.tenant.Spec.TenantID, authority: obs.authority, cloud: obs.app.cloud}
	if m, ok := r.discovered.get(key); ok && m.tenantID == asked.tenantID && m.authority == asked.authority && m.cloud == asked.cloud {
		return m.found
	}
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	discover := r.Discover
	if discover == nil {
		discover = func(ctx context.Context, authorityHost, tenantID string) (entra.TenantDiscovery, error) {
			return entra.DiscoverTenant(ctx, nil, authorityHost, tenantID)
		}
	}
	d, err := discover(ctx, obs.authority, asked.tenantID)
	if err != nil {
		// Not found or failed: the message stays the plain one.
		ctrl.LoggerFrom(ctx).V(1).Info("OpenID discovery of a tenant Entra ID did not find", "tenantID", asked.tenantID, "err", err.Error())
	} else {
		asked.found = d.Cloud
	}
	r.discovered.set(key, asked)
	return asked.found
}

// endDiscoveryEpisode forgets what discovery said of the tenant: its token request
// ended otherwise than TenantNotFound, and the next TenantNotFound may have another
// cause.
func (r *Reconciler) endDiscoveryEpisode(obs *observation) {
	r.discovered.forget(keyOf(obs.tenant.Namespace, obs.tenant.Name))
}

// namingDiscoveredCloud adds to a TenantNotFound failure the cloud discovery found
// the tenant in, when that is not the cloud it was asked in. Only a value of the
// Cloud enum goes into the message, never a string of the remote document.
func namingDiscoveredCloud(obs *observation, f *requestFailure, found v1alpha1.Cloud) *requestFailure {
	if found == "" || found == obs.app.cloud || f.problem == nil || f.problem.Reason != v1alpha1.ReasonTenantNotFound {
		return f
	}
	advice := fmt.Sprintf("Tenant %s is in the %s cloud (per OpenID discovery), not %s: set spec.cloud to %s", obs.tenant.Spec.TenantID, found, obs.app.cloud, found)
	switch found {
	case v1alpha1.CloudUSGovHigh, v1alpha1.CloudDoD:
		advice += " and use an app registered in Azure Government, where GCC High and DoD tenants sign in."
	default:
		advice += " and use an app registered in the commercial cloud, where Public and GCC tenants sign in."
	}
	named := *f
	problem := *f.problem
	problem.Message = f.problem.Message + " " + advice
	named.problem = &problem
	return &named
}
