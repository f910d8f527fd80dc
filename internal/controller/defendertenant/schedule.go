package defendertenant

import (
	"hash/fnv"
	"time"
)

const (
	// minRefreshInterval keeps a tenant from asking Entra ID for tokens more than once a
	// minute, whatever refreshBefore and the token lifetime say.
	minRefreshInterval = time.Minute

	// Tenants created together mint together; spreading their refreshes keeps the
	// token endpoint (and Entra's per-app throttling) from seeing them in lockstep. A
	// fifth of refreshBefore (four minutes for one-hour tokens) spreads a thousand
	// tenants created at once to at most about 1 % of them in any one second.
	refreshJitterShare = 5
	// maxRefreshJitter bounds how much earlier than refreshBefore a tenant refreshes.
	maxRefreshJitter = 5 * time.Minute

	transientBackoffBase = 5 * time.Second
	transientBackoffCap  = 5 * time.Minute

	// Needs-a-human failures are fixed in Entra ID, where no watch can see the fix,
	// so they are retried, but slowly.
	stalledBackoffBase = time.Minute
	stalledBackoffCap  = 15 * time.Minute
)

// jitterFraction maps a stable identity (the object's UID) to [0,1). It is
// deterministic so that the refresh time, and therefore status.nextRefreshTime,
// does not move between reconciles and cause status writes that change nothing.
func jitterFraction(seed string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(seed))
	return float64(h.Sum64()>>11) / float64(1<<53)
}

// refreshTime is when a token minted at mintedAt and expiring at expiresAt should be
// replaced. Like cert-manager's renewal time, it works from the token's actual
// lifetime: refreshBefore when set and shorter than the lifetime, otherwise one third
// of the lifetime; then up to a fifth of that earlier, by jitter.
func refreshTime(mintedAt, expiresAt time.Time, refreshBefore time.Duration, jitter float64) time.Time {
	lifetime := expiresAt.Sub(mintedAt)
	if lifetime <= 0 {
		return mintedAt
	}
	if refreshBefore <= 0 || refreshBefore >= lifetime {
		refreshBefore = lifetime / 3
	}
	spread := min(refreshBefore/refreshJitterShare, maxRefreshJitter)
	at := expiresAt.Add(-refreshBefore - time.Duration(jitter*float64(spread)))
	if earliest := mintedAt.Add(minRefreshInterval); at.Before(earliest) {
		at = earliest
	}
	return at.Truncate(time.Second)
}

// retryDelay is how long to wait before the next token request after `attempts`
// consecutive failures (attempts >= 1). A Retry-After from Entra is a floor.
func retryDelay(attempts int32, needsHuman bool, retryAfter time.Duration, jitter float64) time.Duration {
	base, ceiling := transientBackoffBase, transientBackoffCap
	if needsHuman {
		base, ceiling = stalledBackoffBase, stalledBackoffCap
	}
	delay := ceiling
	if attempts < 1 {
		attempts = 1
	}
	if attempts <= 16 {
		delay = min(base<<(attempts-1), ceiling)
	}
	// Up to 10% extra so tenants sharing one broken credential do not retry in lockstep.
	delay += time.Duration(jitter * float64(delay) / 10)
	return max(delay, retryAfter).Round(time.Second)
}
