package broker

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/errkind"
)

// Sentinels, for errors.Is.
var (
	// ErrReadOnly: Declare or Delete of a read-only entity (the default
	// exchange, amq.* names, or ReadOnly specs). Nothing reached the broker.
	ErrReadOnly = errkind.Named("broker: entity is read-only", "read_only")
	// ErrConflict: a declaration differs from what the connection's registry
	// already holds under that name; nothing reached the broker (it would
	// have refused with 406). *ConflictError names the field.
	ErrConflict = errkind.Named("broker: conflicts with the registered declaration", "conflict")
	// ErrMessagesAtStake: force would delete a queue that holds messages and
	// the caller did not accept losing them.
	ErrMessagesAtStake = errkind.Named("broker: recreating the queue would lose messages", "messages_at_stake")
	// ErrPluginMissing: a delayed-message exchange was declared on a broker
	// without the rabbitmq_delayed_message_exchange plugin.
	ErrPluginMissing = errkind.Named("broker: the delayed-message plugin is missing", "plugin_missing")
	// ErrConsumerStopped: the consumer was stopped by its owner (Stop, its
	// queue deleted through Ops, the Ops closed, the connection closed).
	ErrConsumerStopped = errkind.Named("broker: consumer stopped", "consumer_stopped")
	// ErrUnroutable: a mandatory message reached no queue (basic.return).
	ErrUnroutable = errkind.Named("broker: message unroutable", "unroutable")
	// ErrNacked: the broker refused a message with basic.nack (a queue's
	// reject-publish overflow, an internal error).
	ErrNacked = errkind.Named("broker: message nacked by the broker", "nacked")
	// ErrMessageTooLarge: a message is larger than the broker accepts
	// (max_message_size). *MessageTooLargeError gives both sizes.
	ErrMessageTooLarge = errkind.Named("broker: message too large", "message_too_large")
)

// ConflictError is a declaration that differs from the registered one in
// Field; it matches ErrConflict. Declare the registered spec, delete the
// entity first, or use WithForce to replace it.
type ConflictError struct {
	// Entity is the kind and name, e.g. `queue "orders"`.
	Entity string
	// Field is the first field that differs ("Args.DeadLetterRoutingKey").
	Field string
	// Registered and Requested are that field's values.
	Registered, Requested string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("broker: %s is registered with %s = %s; this declaration has %s", e.Entity, e.Field, e.Registered, e.Requested)
}

// Is makes ConflictError match ErrConflict, and conn.ErrPreconditionFailed: it
// is the broker's 406, foreseen.
func (e *ConflictError) Is(target error) bool {
	return target == ErrConflict || target == conn.ErrPreconditionFailed
}

// OperationError is a call that was refused before reaching the broker:
// read-only entities, misuse.
type OperationError struct {
	Op     string
	Entity string
	Reason string
	Err    error // a sentinel such as ErrReadOnly, or nil
}

func (e *OperationError) Error() string {
	return fmt.Sprintf("broker: %s %s: %s", e.Op, e.Entity, e.Reason)
}

func (e *OperationError) Unwrap() error { return e.Err }

// MessageTooLargeError is a message over the broker's maximum size. Err is
// the broker's 406 when the broker refused it, nil when it was refused
// before sending because the limit was already known.
type MessageTooLargeError struct {
	Size, Limit int
	Err         error
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("broker: message of %d bytes is larger than the broker's maximum of %d bytes", e.Size, e.Limit)
}

// Unwrap gives ErrMessageTooLarge and the broker's refusal, when there was
// one.
func (e *MessageTooLargeError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMessageTooLarge}
	}
	return []error{ErrMessageTooLarge, e.Err}
}

// ForceRefusedError: force would have deleted a queue holding Messages
// messages. It matches ErrMessagesAtStake.
type ForceRefusedError struct {
	Queue    string
	Messages int
	Cause    error // the 406 that asked for the recreate
}

func (e *ForceRefusedError) Error() string {
	return fmt.Sprintf("broker: force-recreating queue %q would lose %d message(s); pass the AcceptMessageLoss option to allow it (cause: %v)", e.Queue, e.Messages, e.Cause)
}

func (e *ForceRefusedError) Unwrap() []error { return []error{ErrMessagesAtStake, e.Cause} }

// RestoreError reports one entity that could not be restored after a
// reconnect; the others were restored regardless.
type RestoreError struct {
	Kind   EntityKind
	Entity string
	Code   int // AMQP reply code, 0 when not a broker refusal
	Err    error
}

func (e *RestoreError) Error() string {
	return fmt.Sprintf("broker: restore %s %s: %v", e.Kind, e.Entity, e.Err)
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
		return &conn.RefusedError{Op: op, Entity: entity, Code: ae.Code, Text: ae.Reason, Err: err}
	}
	return fmt.Errorf("%s %s: %w", op, entity, err)
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
	var re *conn.RefusedError
	if errors.As(err, &re) {
		return re.Code
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// ErrorType is "message_too_large" (ack.ErrorType).
func (e *MessageTooLargeError) ErrorType() string { return "message_too_large" }
