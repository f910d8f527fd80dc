package defendertenant

import (
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
)

// What the operator keeps in memory per tenant are facts only this process knows:
// a status it wrote that the watch cache has not shown yet, a token Secret it
// created whose UID no status records yet, a token whose write failed. observe
// reads them as facts like any other, and decide weighs them. Losing them (a
// restart, a new leader) costs at most one extra read or one extra token request;
// every lasting decision rests on the status and the token Secret.

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

// writtenStatus is the status this process last wrote for a tenant: the
// resourceVersions of the tenant it replaced, which the watch cache may still hand
// over (the version it was written over and, when that was a write of this
// process the cache had not shown yet, those that write replaced and produced),
// and the version it produced. It is dropped as soon as the watch shows another
// version (see forgetCaughtUpWrite), so memory grows with the writes the cache
// has not caught up with, not with tenants.
type writtenStatus struct {
	replaced []string
	produced string
	status   v1alpha1.DefenderTenantStatus
}

// writtenOver is the entry of a status written over the tenant version before,
// producing version after, given the entry of the write before it, if any.
func writtenOver(prev writtenStatus, hadPrev bool, before, after string, status v1alpha1.DefenderTenantStatus) writtenStatus {
	w := writtenStatus{replaced: []string{before}, produced: after, status: status}
	if hadPrev && slices.Contains(prev.replaced, before) {
		// Written over a version the previous write had replaced too: the cache
		// has shown neither write, and the version the previous one produced is
		// older than this one.
		w.replaced = append(w.replaced, prev.replaced...)
		w.replaced = append(w.replaced, prev.produced)
	}
	return w
}
