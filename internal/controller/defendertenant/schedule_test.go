package defendertenant

import (
	"testing"
	"time"
)

func TestRefreshTime(t *testing.T) {
	minted := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		lifetime      time.Duration
		refreshBefore time.Duration
		jitter        float64
		want          time.Time
	}{
		{"default is one third of the lifetime before expiry", 3600 * time.Second, 0, 0, minted.Add(40 * time.Minute)},
		{"refreshBefore shorter than the lifetime is used", time.Hour, 10 * time.Minute, 0, minted.Add(50 * time.Minute)},
		{"refreshBefore not shorter than the lifetime falls back to a third", time.Hour, 2 * time.Hour, 0, minted.Add(40 * time.Minute)},
		{"jitter moves the refresh up to a fifth of refreshBefore earlier", time.Hour, 0, 0.5, minted.Add(40*time.Minute - 2*time.Minute)},
		{"jitter is capped at five minutes", 6 * time.Hour, 0, 0.999999, minted.Add(4*time.Hour - 5*time.Minute)},
		{"never sooner than a minute after minting", 90 * time.Second, 0, 0, minted.Add(time.Minute)},
		{"a token already past its lifetime refreshes at mint time", -time.Second, 0, 0, minted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := refreshTime(minted, minted.Add(tt.lifetime), tt.refreshBefore, tt.jitter)
			if !got.Equal(tt.want) {
				t.Errorf("refreshTime = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name       string
		attempts   int32
		needsHuman bool
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{"first transient failure waits the base", 1, false, 0, 0, 5 * time.Second},
		{"transient backoff doubles", 3, false, 0, 0, 20 * time.Second},
		{"transient backoff is capped", 10, false, 0, 0, 5 * time.Minute},
		{"huge attempt counts do not overflow", 1 << 30, false, 0, 0, 5 * time.Minute},
		{"Retry-After longer than the backoff wins", 1, false, 60 * time.Second, 0, time.Minute},
		{"Retry-After shorter than the backoff does not shorten it", 4, false, time.Second, 0, 40 * time.Second},
		{"needs-a-human failures start at a minute", 1, true, 0, 0, time.Minute},
		{"needs-a-human backoff is capped at fifteen minutes", 8, true, 0, 0, 15 * time.Minute},
		{"jitter adds up to a tenth", 1, true, 0, 0.5, 63 * time.Second},
		{"zero attempts is treated as the first", 0, false, 0, 0, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(tt.attempts, tt.needsHuman, tt.retryAfter, tt.jitter); got != tt.want {
				t.Errorf("retryDelay = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestJitterFractionIsStableAndSpread(t *testing.T) {
	if jitterFraction("a") != jitterFraction("a") {
		t.Fatal("jitterFraction is not deterministic")
	}
	buckets := make([]int, 10)
	for i := range 10000 {
		f := jitterFraction(time.Duration(i).String() + "-uid")
		if f < 0 || f >= 1 {
			t.Fatalf("jitterFraction out of [0,1): %v", f)
		}
		buckets[int(f*10)]++
	}
	for i, n := range buckets {
		if n < 800 || n > 1200 {
			t.Errorf("bucket %d holds %d of 10000 seeds; jitter is not spread evenly", i, n)
		}
	}
}
