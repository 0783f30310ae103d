package warren

import (
	"math"
	"math/rand/v2"
	"time"
)

// delay is the wait before a failed message's next delivery, after its
// attempt-th attempt: InitialInterval × Multiplier^(attempt-1), capped at
// MaxInterval, with ±20% jitter so that messages failing together do not
// come back together. It depends only on the attempt count, which the
// Subscriber remembers across redeliveries, not on a backoff object that a
// redelivery would reset.
func (c RedeliveryConfig) delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(c.InitialInterval) * math.Pow(c.Multiplier, float64(attempt-1))
	if d > float64(c.MaxInterval) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(c.MaxInterval)
	}
	d *= 0.8 + 0.4*rand.Float64()
	return time.Duration(d)
}
