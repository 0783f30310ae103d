package middleware

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/telemetry"
)

// RetryAttempt is passed to RetryConfig.OnAttempt after a failed attempt.
type RetryAttempt struct {
	Msg *message.Message
	// Attempt is the message's attempt that failed (ack.Attempt: counted
	// across in-process retries, delayed retries and redeliveries).
	Attempt int
	Err     error
	// Next is the wait before the next attempt; -1 when none follows.
	Next time.Duration
}

// RetryConfig shapes Retry. Zero fields take the defaults shown.
type RetryConfig struct {
	// MaxAttempts is how many times the handler runs in this process for
	// one delivery, the first try included. Default: 3.
	MaxAttempts int
	// Backoff is the wait between attempts. Default: 100ms before the
	// second attempt, doubling, jittered by half, at most 2s.
	Backoff retry.Backoff
	// MaxElapsedTime stops retrying, counted from the first failure. It
	// must stay well below the broker's
	// consumer_timeout (30 min by default), past which the broker closes the
	// channel of a delivery held unacked (PITFALLS 20). Default: 30s.
	MaxElapsedTime time.Duration
	// AttemptTimeout bounds each attempt with a deadline of its own (the
	// router sets it from Route.Timeout). Default: none.
	AttemptTimeout time.Duration
	// OnAttempt is called after each failed attempt, on the handler's
	// goroutine.
	OnAttempt func(RetryAttempt)
	// Sleep waits between attempts; tests replace it. Default: a timer
	// that also stops when the message's context ends.
	Sleep func(ctx context.Context, d time.Duration) error
	// Telemetry records each failed attempt on the message's process span
	// (an exception event), traces each retry as a span of its own, and
	// counts retries (warren.retries: the conventions name no retry
	// metric). Default: telemetry.Default().
	Telemetry *telemetry.Telemetry
	// Logger logs each failed attempt that will be tried again, at Info,
	// with the message's UUID, the attempt, the error and its error.type
	// (the router passes its own, with the route's name). The attempt that
	// ends the retries is not logged here: what becomes of the message
	// (a delayed retry, a dead letter, a requeue) is, by the step that
	// decides it. Default: silent.
	Logger *slog.Logger
}

func (c *RetryConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	c.Backoff = c.Backoff.Or(retry.Backoff{InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.5, MaxInterval: 2 * time.Second})
	if c.MaxElapsedTime == 0 {
		c.MaxElapsedTime = 30 * time.Second
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	c.Logger = logx.Or(c.Logger)
}

// Validate reports every problem, each naming its field.
func (c *RetryConfig) Validate() error {
	f := configerr.For("middleware.RetryConfig")
	f.Check(c.MaxAttempts < 1, "MaxAttempts", "must be positive")
	f.Backoff("Backoff", c.Backoff.Problems())
	f.Check(c.MaxElapsedTime < 0, "MaxElapsedTime", "must not be negative")
	f.Check(c.AttemptTimeout < 0, "AttemptTimeout", "must not be negative")
	f.Check(c.MaxElapsedTime > 10*time.Minute, "MaxElapsedTime", "at most 10m: the delivery is held unacked meanwhile, and the broker closes the channel at consumer_timeout (30m by default)")
	return f.Err()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry retries the handler in-process with exponential backoff and jitter
// (backoff/v4). Each retry gets a fresh message context derived from the
// original one (and with AttemptTimeout, every attempt a deadline of its
// own), and the original is put back after each attempt, so a timeout
// middleware inside cancels only its own attempt (Watermill issue 467). ack.Permanent and ack.AsRequeue errors are not
// retried. Each execution is an attempt of the message (ack.NextAttempt):
// a handler retried twice sees ack.Attempt 1, 2, 3. The last error is
// returned.
func Retry(cfg RetryConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ack.Track(msg)
			parent := msg.Context()
			var b backoff.ExponentialBackOff // set up at the first failure: nothing to pay on success
			for attempt := 1; ; attempt++ {
				ctx, cancel := cfg.attemptContext(parent, attempt)
				var span trace.Span
				if attempt > 1 {
					// Each retry is a span of its own under the process
					// span; the first attempt is the process span itself.
					ctx, span = instrument.Of(cfg.Telemetry).Tracer().Start(ctx, "retry", trace.WithAttributes(attribute.Int("warren.attempt", ack.Attempt(msg))))
				}
				msg.SetContext(ctx)
				out, err := h(msg)
				cancel()
				if span != nil {
					if err != nil {
						// The exception event is the process span's (one
						// per failed attempt, recorded once).
						span.SetStatus(codes.Error, err.Error())
						span.SetAttributes(attribute.String("error.type", ack.ErrorType(err)))
					}
					span.End()
				}
				msg.SetContext(parent) // an inner middleware may have replaced it (Watermill 467)
				if err == nil {
					return out, nil
				}
				if ack.KindOf(err) != ack.Retryable || attempt >= cfg.MaxAttempts {
					cfg.notify(msg, err, -1)
					return nil, err
				}
				// A failed attempt is an exception event, not a failure of the
				// message: it may yet recover.
				instrument.RecordAttemptFailure(parent, err, ack.Attempt(msg))
				if attempt == 1 {
					b = *cfg.Backoff.BackOff()
					b.MaxElapsedTime = cfg.MaxElapsedTime
					b.Reset()
				}
				next := b.NextBackOff()
				cfg.notify(msg, err, next)
				if next == backoff.Stop {
					return nil, err
				}
				cfg.Logger.Info("warren: handler failed; retrying in process",
					append(logx.Failure(msg.UUID, ack.Attempt(msg), err), "retry_in", next)...)
				if serr := cfg.Sleep(parent, next); serr != nil {
					return nil, errors.Join(err, serr)
				}
				instrument.Of(cfg.Telemetry).Retry(parent, "in_process", queueOf(msg))
				ack.NextAttempt(msg)
			}
		}
	}, nil
}

// attemptContext is the context of one attempt. With AttemptTimeout each
// attempt gets a deadline of its own; without, the first attempt runs on
// the message's context (nothing to pay on the common path) and each retry
// on a fresh child of it, cancelled when that retry ends, so what a failed
// attempt left running does not outlive it into the next.
func (c *RetryConfig) attemptContext(parent context.Context, attempt int) (context.Context, context.CancelFunc) {
	switch {
	case c.AttemptTimeout > 0:
		if dl, ok := parent.Deadline(); ok && attempt == 1 && time.Until(dl) <= c.AttemptTimeout {
			// The message's context is bounded already (the Subscriber's
			// HandlerTimeout): the first attempt needs no context of its own.
			return parent, func() {}
		}
		return context.WithTimeout(parent, c.AttemptTimeout)
	case attempt > 1:
		return context.WithCancel(parent)
	}
	return parent, func() {}
}

func (c *RetryConfig) notify(msg *message.Message, err error, next time.Duration) {
	if c.OnAttempt != nil {
		c.OnAttempt(RetryAttempt{Msg: msg, Attempt: ack.Attempt(msg), Err: err, Next: next})
	}
}
