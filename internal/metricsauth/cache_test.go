package metricsauth

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestCacheExpiresEntriesAndStaysBounded(t *testing.T) {
	t.Parallel()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	c := newCache[int, int](clk)

	c.set(-1, -1, time.Second)
	if v, ok := c.get(-1); !ok || v != -1 {
		t.Fatalf("get(-1) = %d, %t right after set", v, ok)
	}
	clk.Step(time.Second)
	if _, ok := c.get(-1); ok {
		t.Fatal("an entry is still there when its TTL has passed")
	}

	// Full of live entries: a new one replaces the one closest to expiring (the
	// expired -1 went first).
	for i := range maxEntries - 1 {
		c.set(i, i, time.Hour+time.Duration(i)*time.Second)
	}
	c.set(maxEntries, maxEntries, 2*time.Hour)
	if n := len(c.entries); n != maxEntries {
		t.Fatalf("%d entries, want %d", n, maxEntries)
	}
	c.set(maxEntries+1, maxEntries+1, 2*time.Hour)
	if n := len(c.entries); n != maxEntries {
		t.Fatalf("%d entries, want at most %d", n, maxEntries)
	}
	for _, k := range []int{-1, 0} {
		if _, ok := c.get(k); ok {
			t.Errorf("entry %d is still there; it expires first and should have been evicted", k)
		}
	}
	if _, ok := c.get(maxEntries + 1); !ok {
		t.Error("the newest entry was evicted")
	}

	// Updating an entry of a full cache evicts nothing.
	c.set(1, 100, time.Hour)
	if v, ok := c.get(1); !ok || v != 100 || len(c.entries) != maxEntries {
		t.Errorf("update of a full cache: get(1) = %d, %t with %d entries", v, ok, len(c.entries))
	}

	// Once they have all expired, a new entry clears them out.
	clk.Step(3 * time.Hour)
	c.set(-2, -2, time.Minute)
	if n := len(c.entries); n != 1 {
		t.Errorf("%d entries after all but the new one expired, want 1", n)
	}
}
