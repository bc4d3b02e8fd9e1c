package notify

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// base is Backoff's schedule without jitter, computed the naive way.
func base(n int) time.Duration {
	d := 5 * time.Second
	for i := 1; i < n; i++ {
		d *= 2
		if d >= 10*time.Minute {
			return 10 * time.Minute
		}
	}
	return d
}

func TestBackoffRange(t *testing.T) {
	keys := []string{"", "a", "n-0f1e2d3c4b5a6978", "11111111-1111-4111-8111-111111111111"}
	for i := range 200 {
		keys = append(keys, fmt.Sprintf("key-%d", i))
	}
	for _, key := range keys {
		prev := time.Duration(0)
		for n := 1; n <= 40; n++ {
			d, b := Backoff(key, n), base(n)
			if lo, hi := b-b/10, b+b/10; d < lo || d > hi {
				t.Fatalf("Backoff(%q, %d) = %v, outside [%v, %v]", key, n, d, lo, hi)
			}
			if b < 10*time.Minute && d < prev {
				t.Fatalf("Backoff(%q, %d) = %v < Backoff(%q, %d) = %v", key, n, d, key, n-1, prev)
			}
			prev = d
		}
	}
	// The cap holds for any n, however large.
	for _, n := range []int{41, 64, 1000, math.MaxInt} {
		if d := Backoff("k", n); d < 9*time.Minute || d > 11*time.Minute {
			t.Errorf("Backoff(k, %d) = %v, want 10 min ±10 %%", n, d)
		}
	}
}

func TestBackoffDeterministic(t *testing.T) {
	for n := -1; n <= 12; n++ {
		if a, b := Backoff("n-42", n), Backoff("n-42", n); a != b {
			t.Errorf("Backoff(n-42, %d) gave %v then %v", n, a, b)
		}
	}
	// n below 1 counts as 1.
	if Backoff("x", 0) != Backoff("x", 1) || Backoff("x", -5) != Backoff("x", 1) {
		t.Error("n < 1 must count as 1")
	}
	// The jitter depends on the key: 200 keys do not all wait alike, and
	// spread over most of the ±10 % band.
	seen := map[time.Duration]bool{}
	lo, hi := time.Hour, time.Duration(0)
	for i := range 200 {
		d := Backoff(fmt.Sprintf("key-%d", i), 3)
		seen[d] = true
		lo, hi = min(lo, d), max(hi, d)
	}
	if len(seen) < 150 {
		t.Errorf("200 keys gave only %d distinct waits", len(seen))
	}
	// Each draw misses the outer tenth of the [18s, 22s] band on one side
	// with probability 0.9, so all 200 miss it with 0.9^200 < 1e-9 (and the
	// keys are fixed: the outcome never changes).
	if lo > 18400*time.Millisecond || hi < 21600*time.Millisecond {
		t.Errorf("waits for n=3 span only [%v, %v] of [18s, 22s]", lo, hi)
	}
}

func TestGiveUpAfter(t *testing.T) {
	if GiveUpAfter != 24*time.Hour {
		t.Errorf("GiveUpAfter = %v", GiveUpAfter)
	}
}
