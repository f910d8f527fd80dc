package metricsauth

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// cache is a map whose entries expire, holding at most maxEntries.
type cache[K comparable, V any] struct {
	clock   clock.PassiveClock
	mu      sync.Mutex
	entries map[K]cacheEntry[V]
}

type cacheEntry[V any] struct {
	value   V
	expires time.Time
}

func newCache[K comparable, V any](clk clock.PassiveClock) *cache[K, V] {
	return &cache[K, V]{clock: clk, entries: map[K]cacheEntry[V]{}}
}

func (c *cache[K, V]) get(key K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !c.clock.Now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

func (c *cache[K, V]) set(key K, value V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= maxEntries {
		c.evict(now)
	}
	c.entries[key] = cacheEntry[V]{value: value, expires: now.Add(ttl)}
}

// evict drops the expired entries or, if none has expired, the one closest to
// expiring: scanning the map happens only when it is full, which a bounded number
// of scrapers never makes it.
func (c *cache[K, V]) evict(now time.Time) {
	var soonest K
	var soonestExpiry time.Time
	dropped := false
	for k, e := range c.entries {
		switch {
		case !now.Before(e.expires):
			delete(c.entries, k)
			dropped = true
		case soonestExpiry.IsZero() || e.expires.Before(soonestExpiry):
			soonest, soonestExpiry = k, e.expires
		}
	}
	if !dropped {
		delete(c.entries, soonest)
	}
}
