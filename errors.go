package warren

import (
	"errors"
	"fmt"
)

// Sentinels, for errors.Is.
var (
	// ErrClosed: the Publisher or Subscriber was closed.
	ErrClosed = errors.New("warren: closed")
	// ErrUnroutable: a mandatory message reached no queue (basic.return).
	ErrUnroutable = errors.New("warren: message unroutable")
	// ErrNacked: the broker refused a message (basic.nack).
	ErrNacked = errors.New("warren: message nacked by the broker")
	// ErrPublishTimeout: the publish deadline passed before every message
	// was confirmed.
	ErrPublishTimeout = errors.New("warren: publish not confirmed in time")
	// ErrPoison: a delivery could not be decoded into a message.
	ErrPoison = errors.New("warren: poison message")
	// ErrInvalidConfig: a Config or argument is wrong.
	ErrInvalidConfig = errors.New("warren: invalid configuration")
)

// ConfigError names a config field that is wrong.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("warren: %s: %s", e.Field, e.Reason) }

// Is makes ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// PublishError is the failure of some messages of one Publish call.
type PublishError struct {
	Topic string
	// Failed maps message UUIDs to why each failed.
	Failed map[string]error
}

func (e *PublishError) Error() string {
	for id, err := range e.Failed {
		if len(e.Failed) == 1 {
			return fmt.Sprintf("warren: publish to %q: message %s: %v", e.Topic, id, err)
		}
		return fmt.Sprintf("warren: publish to %q: %d messages failed, e.g. %s: %v", e.Topic, len(e.Failed), id, err)
	}
	return fmt.Sprintf("warren: publish to %q failed", e.Topic)
}

// Unwrap lets errors.Is find each message's error (ErrUnroutable, ...).
func (e *PublishError) Unwrap() []error {
	out := make([]error, 0, len(e.Failed))
	for _, err := range e.Failed {
		out = append(out, err)
	}
	return out
}

// PoisonError describes a delivery that could not be decoded.
type PoisonError struct {
	Queue       string
	DeliveryTag uint64
	MessageID   string
	// Body and Headers are the raw delivery, for dead-lettering it.
	Body    []byte
	Headers map[string]any
	Err     error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("warren: poison message %q (tag %d) on queue %q: %v", e.MessageID, e.DeliveryTag, e.Queue, e.Err)
}

func (e *PoisonError) Unwrap() []error { return []error{ErrPoison, e.Err} }
