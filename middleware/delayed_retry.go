package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/telemetry"
)

// Headers of DelayedRetry.
const (
	// HeaderRetryRound counts the delayed retries a message went through.
	HeaderRetryRound = "warren-retry-round"
)

// ErrRetriesExhausted wraps the last error of a message that went through
// every delay level. It names no error type of its own: the dead letter's
// warren-dl-error-type and the span's error.type say what failed, the
// handler's error.
var ErrRetriesExhausted = errors.New("middleware: delayed retries exhausted")

// DefaultDelayLevels are DelayedRetry's default levels.
var DefaultDelayLevels = []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}

// Watermill's delay metadata (components/delay), which DelayedRetry sets
// on its copy: a delay-aware publisher (warren's, or Watermill's delayed
// Pub/Subs) delivers the copy when it is due.
const (
	metaDelayedUntil = "_watermill_delayed_until"
	metaDelayedFor   = "_watermill_delayed_for"
)

// DelayedRetryEvent is passed to DelayedRetryConfig.OnRetry once a message
// has been scheduled to come back.
type DelayedRetryEvent struct {
	Msg   *message.Message
	Err   error
	Round int
	Level time.Duration
	// Queue is the work queue the copy comes back to.
	Queue string
}

// DelayedRetryConfig shapes DelayedRetry.
type DelayedRetryConfig struct {
	// Publisher schedules the copy back to the work queue, the topic being
	// the queue's name, with Watermill's delay metadata: a
	// warren.Publisher with warren.ExistingQueues mapping (default
	// exchange, routing key = topic) sends it through the broker's delay
	// levels (delay.Schedule) and returns once the broker confirmed.
	// Required.
	Publisher message.Publisher
	// Levels are the delays, in whole seconds (warren's delay levels round
	// up to seconds). Default: DefaultDelayLevels (1s, 10s, 1m, 10m).
	Levels []time.Duration
	// Queue is the work queue for messages without ack.Info (other
	// Pub/Subs). Default: the queue the message was consumed from.
	Queue string
	// OnRetry is called after each confirmed republish.
	OnRetry func(DelayedRetryEvent)
	// Telemetry records the failure on the message's process span and
	// counts delayed retries. Default: telemetry.Default().
	Telemetry *telemetry.Telemetry
	// Logger logs each delayed retry once confirmed, at Info, and a retry
	// that could not be scheduled (the message is requeued), at Error, with
	// the message's UUID, the attempt, the error and its error.type.
	// Default: silent.
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

func (c *DelayedRetryConfig) setDefaults() {
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
	if len(c.Levels) == 0 {
		c.Levels = DefaultDelayLevels
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = logx.Or(c.Logger)
}

// Validate reports every problem, each naming its field.
func (c *DelayedRetryConfig) Validate() error {
	f := configerr.For("middleware.DelayedRetryConfig")
	f.Check(c.Publisher == nil, "Publisher", "required")
	for i, l := range c.Levels {
		f.Check(l < time.Millisecond, fmt.Sprintf("Levels[%d]", i), fmt.Sprintf("%v: at least 1ms", l))
	}
	return f.Err()
}

// DelayedRetry schedules a copy of a failed message (ack.Copy) back to its
// work queue after the delay of its next level, through the same delay
// infrastructure as any scheduled message (warren's broker delay levels:
// per-message TTLs expire only at the head of a queue, PITFALLS 18), with
// warren's attempt header incremented (RabbitMQ 4.0+ ignores a
// client-set x-death, PITFALLS 16), and returns nil only once the broker
// confirmed the republish, so the original is acked after its copy is safe.
// When every level is used, it returns the error wrapped in
// ErrRetriesExhausted (for DeadLetter). A failed republish returns an
// ack.AsRequeue error: the original is requeued, not lost. ack.Permanent and
// ack.AsRequeue errors pass through untouched.
func DelayedRetry(cfg DelayedRetryConfig) (message.HandlerMiddleware, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || ack.KindOf(err) != ack.Retryable {
				return out, err
			}
			round, _ := strconv.Atoi(msg.Metadata.Get(HeaderRetryRound))
			if round >= len(cfg.Levels) {
				return nil, fmt.Errorf("%w after %d delayed retries: %w", ErrRetriesExhausted, round, err)
			}
			queue := queueOf(msg)
			if queue == "" {
				queue = cfg.Queue
			}
			if queue == "" {
				return nil, err // nowhere to come back to; let the outer layers decide
			}
			level := cfg.Levels[round]
			retry := ack.Copy(msg)
			// The copy's previous attempts are every execution so far.
			retry.Metadata.Set(ack.AttemptHeader, strconv.Itoa(ack.Attempt(msg)))
			retry.Metadata.Set(HeaderRetryRound, strconv.Itoa(round+1))
			retry.Metadata.Set(HeaderRetryLevel, level.String())
			if retry.Metadata.Get(HeaderFirstFailure) == "" {
				retry.Metadata.Set(HeaderFirstFailure, cfg.Now().UTC().Format(time.RFC3339Nano))
			}
			now := cfg.Now()
			retry.Metadata.Set(metaDelayedUntil, now.Add(level).UTC().Format(time.RFC3339Nano))
			retry.Metadata.Set(metaDelayedFor, level.String())
			if perr := cfg.Publisher.Publish(queue, retry); perr != nil {
				cfg.Logger.Error("warren: handler failed and its delayed retry could not be scheduled; the message is requeued",
					append(logx.Failure(msg.UUID, ack.Attempt(msg), err), "delay", level, "publish_error", perr)...)
				return nil, ack.AsRequeue(fmt.Errorf("middleware: schedule the retry to %s in %v failed (%w) after: %w", queue, level, perr, err))
			}
			cfg.Logger.Info("warren: handler failed; retrying after a delay",
				append(logx.Failure(msg.UUID, ack.Attempt(msg), err), "delay", level, "round", round+1)...)
			// The message failed even though it is acked: its process span
			// says so.
			instrument.RecordFailure(msg.Context(), err, ack.Attempt(msg))
			instrument.Of(cfg.Telemetry).Retry(msg.Context(), "delayed", queue)
			if cfg.OnRetry != nil {
				cfg.OnRetry(DelayedRetryEvent{Msg: msg, Err: err, Round: round + 1, Level: level, Queue: queue})
			}
			return nil, nil
		}
	}, nil
}
