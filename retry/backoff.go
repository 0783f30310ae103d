// Package retry is warren's one shape of a backoff: how long to wait
// between attempts. A connection's reconnects (conn.RetryPolicy), a
// handler's in-process retries (middleware.RetryConfig) and a Subscriber's
// redeliveries (warren.RedeliveryConfig) all take a Backoff; each config
// says its own defaults.
package retry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Backoff is a wait that grows: InitialInterval before the first retry,
// times Multiplier after each, capped at MaxInterval, each wait picked at
// random in [d×(1-RandomizationFactor), d×(1+RandomizationFactor)] so that
// clients failing together do not retry together. A zero field takes the
// default of the config the Backoff is in.
type Backoff struct {
	InitialInterval time.Duration
	// Multiplier grows the wait per attempt; at least 1.
	Multiplier float64
	// RandomizationFactor is the jitter, 0 to 1 (0: none).
	RandomizationFactor float64
	// MaxInterval caps one wait.
	MaxInterval time.Duration
}

// Or is b with every zero field taken from def.
func (b Backoff) Or(def Backoff) Backoff {
	if b.InitialInterval == 0 {
		b.InitialInterval = def.InitialInterval
	}
	if b.Multiplier == 0 {
		b.Multiplier = def.Multiplier
	}
	if b.RandomizationFactor == 0 {
		b.RandomizationFactor = def.RandomizationFactor
	}
	if b.MaxInterval == 0 {
		b.MaxInterval = def.MaxInterval
	}
	return b
}

// Problems lists what is wrong with b, each as "Field: reason", for a
// config's Validate to name under its own prefix.
func (b Backoff) Problems() []string {
	var out []string
	if b.InitialInterval < 0 {
		out = append(out, "InitialInterval: must not be negative")
	}
	if b.Multiplier < 1 {
		out = append(out, fmt.Sprintf("Multiplier: %v: want at least 1", b.Multiplier))
	}
	if b.RandomizationFactor < 0 || b.RandomizationFactor > 1 {
		out = append(out, fmt.Sprintf("RandomizationFactor: %v: want 0 to 1", b.RandomizationFactor))
	}
	if b.MaxInterval < b.InitialInterval {
		out = append(out, "MaxInterval: must not be below InitialInterval")
	}
	return out
}

// Wait is the wait before retry n (1 for the first retry), jittered.
func (b Backoff) Wait(n int) time.Duration {
	d := float64(b.InitialInterval) * math.Pow(b.Multiplier, float64(max(n, 1)-1))
	if d > float64(b.MaxInterval) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.MaxInterval)
	}
	if f := b.RandomizationFactor; f > 0 {
		d *= 1 - f + 2*f*rand.Float64()
	}
	return time.Duration(d)
}

// BackOff is b as a backoff/v4 BackOff that never stops by itself (the
// caller bounds attempts or time).
func (b Backoff) BackOff() *backoff.ExponentialBackOff {
	e := backoff.NewExponentialBackOff()
	e.InitialInterval = b.InitialInterval
	e.Multiplier = b.Multiplier
	e.RandomizationFactor = b.RandomizationFactor
	e.MaxInterval = b.MaxInterval
	e.MaxElapsedTime = 0
	e.Reset()
	return e
}
