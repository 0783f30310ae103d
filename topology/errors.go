package topology

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Sentinels, for errors.Is.
var (
	// ErrInvalidSpec: a spec failed Validate; no network call was made.
	ErrInvalidSpec = errors.New("topology: invalid spec")
	// ErrReadOnly: Declare or Delete of a read-only entity (the default
	// exchange, amq.* names, or ReadOnly specs).
	ErrReadOnly = errors.New("topology: entity is read-only")
	// ErrNotFound: the entity does not exist (404 NOT_FOUND).
	ErrNotFound = errors.New("topology: not found")
	// ErrPreconditionFailed: the entity exists with other properties (406).
	ErrPreconditionFailed = errors.New("topology: precondition failed")
	// ErrMessagesAtStake: force would delete a queue that holds messages and
	// the caller did not accept losing them.
	ErrMessagesAtStake = errors.New("topology: recreating the queue would lose messages")
	// ErrPluginMissing: a delayed-message exchange was declared on a broker
	// without the rabbitmq_delayed_message_exchange plugin.
	ErrPluginMissing = errors.New("topology: broker plugin missing")
	// ErrConsumerStopped: the consumer was stopped, or ended because its
	// queue is gone.
	ErrConsumerStopped = errors.New("topology: consumer stopped")
)

// SpecError names the field of a spec that is wrong.
type SpecError struct {
	// Spec is the kind of spec and its name, e.g. `queue "orders"`.
	Spec   string
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("topology: %s: %s: %s", e.Spec, e.Field, e.Reason)
}

// Is makes SpecError match ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }

// OperationError is a call that was refused before reaching the broker:
// read-only entities, misuse.
type OperationError struct {
	Op     string
	Entity string
	Reason string
	Err    error // a sentinel such as ErrReadOnly, or nil
}

func (e *OperationError) Error() string {
	return fmt.Sprintf("topology: %s %s: %s", e.Op, e.Entity, e.Reason)
}

func (e *OperationError) Unwrap() error { return e.Err }

// ChannelError is the broker refusing an operation: the AMQP reply code and
// text, with the *amqp091.Error in the chain. 404 matches ErrNotFound and 406
// matches ErrPreconditionFailed.
type ChannelError struct {
	Op     string
	Entity string
	Code   int
	Text   string
	Err    error
}

func (e *ChannelError) Error() string {
	return fmt.Sprintf("topology: %s %s: %d %s", e.Op, e.Entity, e.Code, e.Text)
}

func (e *ChannelError) Unwrap() error { return e.Err }

// Is matches the sentinel of the reply code.
func (e *ChannelError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == amqp.NotFound
	case ErrPreconditionFailed:
		return e.Code == amqp.PreconditionFailed
	}
	return false
}

// ForceRefusedError: force would have deleted a queue holding Messages
// messages. It matches ErrMessagesAtStake.
type ForceRefusedError struct {
	Queue    string
	Messages int
	Cause    error // the 406 that asked for the recreate
}

func (e *ForceRefusedError) Error() string {
	return fmt.Sprintf("topology: force-recreating queue %q would lose %d message(s); pass AcceptMessageLoss to allow it (cause: %v)", e.Queue, e.Messages, e.Cause)
}

func (e *ForceRefusedError) Unwrap() []error { return []error{ErrMessagesAtStake, e.Cause} }

// RestoreError reports one entity that could not be restored after a
// reconnect; the others were restored regardless.
type RestoreError struct {
	// Kind is "exchange", "queue", "binding" or "consumer".
	Kind   string
	Entity string
	Code   int // AMQP reply code, 0 when not a broker refusal
	Err    error
}

func (e *RestoreError) Error() string {
	return fmt.Sprintf("topology: restore %s %s: %v", e.Kind, e.Entity, e.Err)
}

func (e *RestoreError) Unwrap() error { return e.Err }

// channelError wraps a broker refusal; other errors pass through wrapped
// with the operation.
func channelError(op, entity string, err error) error {
	if err == nil {
		return nil
	}
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code != 0 && isChannelLevel(ae.Code) {
		return &ChannelError{Op: op, Entity: entity, Code: ae.Code, Text: ae.Reason, Err: err}
	}
	return fmt.Errorf("topology: %s %s: %w", op, entity, err)
}

// isChannelLevel: the reply codes that close only the channel.
func isChannelLevel(code int) bool {
	switch code {
	case amqp.ContentTooLarge, amqp.NoRoute, amqp.NoConsumers, amqp.AccessRefused,
		amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed:
		return true
	}
	return false
}

// replyCode is the AMQP reply code in err's chain, or 0.
func replyCode(err error) int {
	var ce *ChannelError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}
