package conn

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/warrenmq/warren/retry"
)

// RetryPolicy is how often, how fast and for which errors connecting is
// retried: attempts spaced by a Backoff, bounded by MaxAttempts and
// MaxElapsedTime. The zero value is "the default of the field it is in"
// (see Config.FirstConnect and Config.Reconnect); a policy with any field
// set takes the zero value of the others as written: MaxAttempts 0 retries
// without bound.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts, the first included (1: no retry).
	// 0: no bound.
	MaxAttempts int
	// MaxElapsedTime stops retrying once this much time has passed since
	// the first attempt. 0: no bound.
	MaxElapsedTime time.Duration
	// FirstRetryImmediate retries once with no wait before backing off: most
	// drops (a broker restart, a load balancer closing idle connections) are
	// over by then.
	FirstRetryImmediate bool
	// Backoff is the wait between retries. Zero fields: 50ms before the
	// first backed-off retry, doubling, jittered by half, at most 5s.
	Backoff retry.Backoff
	// NoJitter turns the jitter off (a zero Backoff.RandomizationFactor
	// takes the default).
	NoJitter bool
	// Retryable says which errors are retried. Default (nil): everything but
	// authentication and vhost refusals the broker sent (no retry can fix
	// them) and a cancelled context. A vhost's or user's connection limit
	// (ErrConnectionLimit) is no refused login: it is retried. A handshake
	// that the broker drops at the authentication step (what RabbitMQ does
	// with a wrong password, and what a network blip looks like) is
	// retried, but three in a row end the retries as a refusal. Whatever
	// the filter says, a login no node offers a mechanism for (the URL's
	// auth_mechanism) ends the retries once every node has been asked.
	Retryable func(error) bool
}

// defaultBackoff is RetryPolicy.Backoff's defaults.
var defaultBackoff = retry.Backoff{InitialInterval: 50 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.5, MaxInterval: 5 * time.Second}

// isZero reports the zero policy (take the field's default).
func (p RetryPolicy) isZero() bool {
	return p.MaxAttempts == 0 && p.MaxElapsedTime == 0 && !p.FirstRetryImmediate &&
		p.Backoff == (retry.Backoff{}) && !p.NoJitter && p.Retryable == nil
}

// problems lists what is wrong with p, for Config.Validate.
func (p RetryPolicy) problems() []string {
	var out []string
	if p.MaxAttempts < 0 {
		out = append(out, "MaxAttempts: must not be negative")
	}
	if p.MaxElapsedTime < 0 {
		out = append(out, "MaxElapsedTime: must not be negative")
	}
	for _, pr := range p.Backoff.Or(defaultBackoff).Problems() {
		out = append(out, "Backoff."+pr)
	}
	return out
}

// newBackOff is one run of attempts' waits (backoff.Stop once the policy
// says no more).
func (p RetryPolicy) newBackOff() backoff.BackOff {
	bo := p.Backoff.Or(defaultBackoff)
	if p.NoJitter {
		bo.RandomizationFactor = 0
	}
	e := bo.BackOff()
	e.MaxElapsedTime = p.MaxElapsedTime
	e.Reset()
	var b backoff.BackOff = e
	if p.FirstRetryImmediate {
		b = &immediateFirst{next: b}
	}
	if p.MaxAttempts > 0 {
		// WithMaxRetries counts retries: attempts less the first.
		b = backoff.WithMaxRetries(b, uint64(p.MaxAttempts-1))
	}
	return b
}

func (p RetryPolicy) isRetryable(err error) bool {
	if p.Retryable == nil {
		return !refusedByBroker(err) && !errors.Is(err, context.Canceled)
	}
	return p.Retryable(err)
}

// defaultFirstConnect: one attempt, so a wrong URL fails fast.
var defaultFirstConnect = RetryPolicy{MaxAttempts: 1}

// defaultReconnect: forever, first retry immediate, then the default
// Backoff (exponential with jitter from 50ms, capped at 5s).
var defaultReconnect = RetryPolicy{FirstRetryImmediate: true}

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
