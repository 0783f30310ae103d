package conn

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/warrenmq/warren/retry"
)

// RetryPolicy decides how often, how fast and for which errors connecting is
// retried. Build one with Attempts, Delays, Repeat or Exponential; the zero
// value means "the default of the field it is in" (see Config).
type RetryPolicy struct {
	newBackOff func() backoff.BackOff
	retryable  func(error) bool
	name       string
}

// IsZero reports whether p is the zero policy (use the default).
func (p RetryPolicy) IsZero() bool { return p.newBackOff == nil }

func (p RetryPolicy) String() string {
	if p.IsZero() {
		return "default"
	}
	return p.name
}

// Once makes a single attempt.
func Once() RetryPolicy { return Delays() }

// Delays makes 1 + len(delays) attempts, waiting delays[i] before retry i+1.
func Delays(delays ...time.Duration) RetryPolicy {
	ds := append([]time.Duration(nil), delays...)
	return RetryPolicy{
		name:       "delays" + durations(ds),
		newBackOff: func() backoff.BackOff { return &delayList{delays: ds} },
	}
}

// Repeat retries forever, waiting d between attempts.
func Repeat(d time.Duration) RetryPolicy {
	return RetryPolicy{
		name:       "repeat(" + d.String() + ")",
		newBackOff: func() backoff.BackOff { return backoff.NewConstantBackOff(d) },
	}
}

// ExponentialConfig shapes Exponential. Zero fields take the defaults shown.
type ExponentialConfig struct {
	// FirstRetryImmediate retries once with no wait before backing off: most
	// drops (a broker restart, a load balancer closing idle connections) are
	// over by then.
	FirstRetryImmediate bool
	// Backoff is the wait between retries. Default: 50ms before the first
	// backed-off retry, doubling, jittered by half, at most 5s.
	Backoff retry.Backoff
	// NoJitter turns the jitter off (a zero Backoff.RandomizationFactor
	// takes the default).
	NoJitter bool
	// MaxElapsedTime stops retrying after this much time; 0 retries forever.
	MaxElapsedTime time.Duration
}

// Exponential retries with exponential backoff and jitter (backoff/v4).
func Exponential(c ExponentialConfig) RetryPolicy {
	bo := c.Backoff.Or(retry.Backoff{InitialInterval: 50 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.5, MaxInterval: 5 * time.Second})
	if bo.Multiplier < 1 {
		bo.Multiplier = 2
	}
	if c.NoJitter {
		bo.RandomizationFactor = 0
	}
	return RetryPolicy{
		name: "exponential(" + bo.InitialInterval.String() + ".." + bo.MaxInterval.String() + ")",
		newBackOff: func() backoff.BackOff {
			b := bo.BackOff()
			b.MaxElapsedTime = c.MaxElapsedTime
			b.Reset()
			if c.FirstRetryImmediate {
				return &immediateFirst{next: b}
			}
			return b
		},
	}
}

// WithFilter returns p retrying only the errors for which retryable returns
// true. The default filter is DefaultRetryable.
func (p RetryPolicy) WithFilter(retryable func(error) bool) RetryPolicy {
	p.retryable = retryable
	return p
}

// RetryAll is a filter that retries every error, authentication included.
func RetryAll(error) bool { return true }

// DefaultRetryable is the default filter: everything but authentication and
// vhost refusals the broker sent (which no retry can fix) and a cancelled
// context. A vhost's or user's connection limit (ErrConnectionLimit) is not
// a refused login: it is retried. A handshake that the broker drops at the
// authentication step (what RabbitMQ does with a wrong password, and what a
// network blip looks like) is retried, but three in a row end the retries as
// a refusal.
func DefaultRetryable(err error) bool {
	return !refusedByBroker(err) && !errors.Is(err, context.Canceled)
}

func (p RetryPolicy) isRetryable(err error) bool {
	if p.retryable == nil {
		return DefaultRetryable(err)
	}
	return p.retryable(err)
}

// defaultFirstConnect: one attempt, so a wrong URL fails fast.
func defaultFirstConnect() RetryPolicy { return Once() }

// defaultReconnect: forever, first retry immediate, exponential with jitter
// from 50ms, capped at 5s.
func defaultReconnect() RetryPolicy {
	p := Exponential(ExponentialConfig{FirstRetryImmediate: true})
	p.name = "default reconnect: " + p.name
	return p
}

type delayList struct {
	delays []time.Duration
	i      int
}

func (d *delayList) NextBackOff() time.Duration {
	if d.i >= len(d.delays) {
		return backoff.Stop
	}
	d.i++
	return d.delays[d.i-1]
}

func (d *delayList) Reset() { d.i = 0 }

type immediateFirst struct {
	next backoff.BackOff
	used bool
}

func (b *immediateFirst) NextBackOff() time.Duration {
	if !b.used {
		b.used = true
		return 0
	}
	return b.next.NextBackOff()
}

func (b *immediateFirst) Reset() { b.used = false; b.next.Reset() }

func durations(ds []time.Duration) string {
	s := "["
	for i, d := range ds {
		if i > 0 {
			s += " "
		}
		s += d.String()
	}
	return s + "]"
}
