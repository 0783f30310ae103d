package retry_test

import (
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/retry"
)

func TestOrFillsOnlyZeroFields(t *testing.T) {
	def := retry.Backoff{InitialInterval: time.Second, Multiplier: 2, RandomizationFactor: 0.5, MaxInterval: time.Minute}
	got := retry.Backoff{Multiplier: 3}.Or(def)
	want := retry.Backoff{InitialInterval: time.Second, Multiplier: 3, RandomizationFactor: 0.5, MaxInterval: time.Minute}
	if got != want {
		t.Fatalf("Or = %+v, want %+v", got, want)
	}
}

func TestProblemsNameEachField(t *testing.T) {
	bad := retry.Backoff{InitialInterval: -time.Second, Multiplier: 0.5, RandomizationFactor: 2, MaxInterval: -2 * time.Second}
	got := strings.Join(bad.Problems(), "\n")
	for _, field := range []string{"InitialInterval:", "Multiplier:", "RandomizationFactor:", "MaxInterval:"} {
		if !strings.Contains(got, field) {
			t.Errorf("Problems() = %q: %s not named", got, field)
		}
	}
	good := retry.Backoff{InitialInterval: time.Second, Multiplier: 2, RandomizationFactor: 0.1, MaxInterval: time.Minute}
	if p := good.Problems(); len(p) != 0 {
		t.Fatalf("a valid Backoff has problems: %v", p)
	}
}

func TestWaitGrowsAndIsCapped(t *testing.T) {
	b := retry.Backoff{InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second}
	for n, want := range map[int]time.Duration{
		0:       100 * time.Millisecond, // below 1 counts as the first retry
		1:       100 * time.Millisecond,
		2:       200 * time.Millisecond,
		4:       800 * time.Millisecond,
		5:       time.Second,
		1 << 20: time.Second, // math.Pow overflows to +Inf: still the cap
	} {
		if got := b.Wait(n); got != want {
			t.Errorf("Wait(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestWaitJitterStaysInItsBand(t *testing.T) {
	b := retry.Backoff{InitialInterval: time.Second, Multiplier: 1, RandomizationFactor: 0.25, MaxInterval: time.Second}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := b.Wait(3)
		if d < 750*time.Millisecond || d > 1250*time.Millisecond {
			t.Fatalf("Wait = %v, outside [750ms, 1.25s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Fatal("a RandomizationFactor of 0.25 gave one wait 1000 times: no jitter")
	}
}

func TestBackOffNeverStopsByItself(t *testing.T) {
	b := retry.Backoff{InitialInterval: time.Millisecond, Multiplier: 2, MaxInterval: 4 * time.Millisecond}
	e := b.BackOff()
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond}
	for i, w := range want {
		if got := e.NextBackOff(); got != w {
			t.Fatalf("wait %d = %v, want %v", i+1, got, w)
		}
	}
	if e.MaxElapsedTime != 0 {
		t.Fatalf("MaxElapsedTime = %v: the caller bounds attempts, not the BackOff", e.MaxElapsedTime)
	}
}
