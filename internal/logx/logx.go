// Package logx is warren's log vocabulary: the keys every line about a
// message carries, so that a line of the router, a middleware or a
// Subscriber reads the same way and can be searched on the same fields.
// The table of events and levels is in the router's package doc.
package logx

import (
	"log/slog"

	"github.com/warrenmq/warren/internal/errkind"
)

// The keys of warren's log lines. A line never carries a message's payload
// or its headers' values: a log is not a data store, and payloads hold
// personal data.
const (
	Route       = "route"        // the router's route name
	Queue       = "queue"        // the queue consumed from
	MessageUUID = "message_uuid" // Watermill's message UUID
	MessageID   = "message_id"   // the AMQP message-id of a delivery not decoded (poison)
	Attempt     = "attempt"      // the attempt that failed, counting from 1
	Error       = "error"        // the error's text
	ErrorType   = "error.type"   // ack.ErrorType of the error, as on spans and metrics
)

// Discard is a logger that drops everything, for configs without one.
var Discard = slog.New(slog.DiscardHandler)

// Or is l, or Discard when l is nil.
func Or(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard
	}
	return l
}

// Failure are the attributes of a message's failed attempt: its UUID, the
// attempt (left out when 0: unknown), the error and its type.
func Failure(uuid string, attempt int, err error) []any {
	attrs := make([]any, 0, 8)
	attrs = append(attrs, MessageUUID, uuid)
	if attempt > 0 {
		attrs = append(attrs, Attempt, attempt)
	}
	if err != nil {
		attrs = append(attrs, Error, err, ErrorType, errkind.Type(err))
	}
	return attrs
}
