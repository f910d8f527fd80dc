package defendertenant

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// What the operator keeps in memory per tenant is a cache: losing it (a restart, a
// new leader) costs at most one extra read or one extra token request, never a
// changed decision. Everything that decides behaviour is in the status or the token
// Secret.

// leftover is a token that was minted but whose write failed. The next attempt
// publishes it instead of asking Entra ID again, so an API server outage costs no
// token requests.
type leftover struct {
	raw        string
	mintedAt   time.Time
	inputsHash string
	// generation: a token minted for another spec is not published.
	generation int64
}

// perTenant is what the operator remembers per tenant between reconciles, safe for
// concurrent workers.
type perTenant[V any] struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]V
}

func (p *perTenant[V]) set(key types.NamespacedName, v V) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.entries == nil {
		p.entries = map[types.NamespacedName]V{}
	}
	p.entries[key] = v
}

func (p *perTenant[V]) get(key types.NamespacedName) (V, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.entries[key]
	return v, ok
}

func (p *perTenant[V]) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.entries, key)
}

// writtenFailure is the status this process last wrote for a failing tenant, and the
// resourceVersion it was written over. The watch cache may hand the next reconcile
// the tenant as it was before that write; without this, that lag would hide the
// backoff and cost a second token request. Only failing tenants are kept, so memory
// grows with failures, not with tenants.
type writtenFailure struct {
	over   string
	status v1alpha1.DefenderTenantStatus
}
