// Package headers names the AMQP headers warren adds for its own use,
// once for every package that writes, reads or strips them. None of them
// ever reaches a user's message metadata: the marshaler drops them on the
// way in, and copies of a message (retries, dead letters) drop them on the
// way out.
package headers

import "strings"

// PublishSeq is the header a confirm channel adds to a mandatory message
// only when another unsettled publish on the channel has the same exchange,
// routing key and message id: a basic.return carries no delivery tag, and
// those three alone would not tell the two apart (PITFALLS 6). Its value is
// a string, so that any consumer can decode it.
const PublishSeq = "warren-publish-seq"

// ScheduleHeaderPrefix starts the headers that route a scheduled message
// through the delay levels (delay.Schedule).
const ScheduleHeaderPrefix = "warren-delay-"

// ScheduledExpiration keeps the per-message TTL of a scheduled message
// through the delay levels, where it would expire the message out of a
// level early; the hand-over restores it.
const ScheduledExpiration = ScheduleHeaderPrefix + "expiration"

// Internal reports whether a header is warren's own plumbing.
func Internal(name string) bool {
	return name == PublishSeq || strings.HasPrefix(name, ScheduleHeaderPrefix)
}

// Metadata keys that the marshaler maps to AMQP properties instead of
// headers, read by the middleware too (tracing reports the correlation id).
// The root package exports them as warren.MetaX.
const (
	MetaContentType     = "amqp.content_type"
	MetaContentEncoding = "amqp.content_encoding"
	MetaCorrelationID   = "amqp.correlation_id"
	MetaReplyTo         = "amqp.reply_to"
	MetaExpiration      = "amqp.expiration"
	MetaPriority        = "amqp.priority"
	MetaType            = "amqp.type"
	MetaAppID           = "amqp.app_id"
	MetaUserID          = "amqp.user_id"
	MetaTimestamp       = "amqp.timestamp"
	MetaDeliveryMode    = "amqp.delivery_mode"
)

// ReplyError and ReplyErrorType mark an error reply: the responder's
// handler failed (the router writes them, the Requester reads them).
const (
	ReplyError     = "warren-reply-error"
	ReplyErrorType = "warren-reply-error-type"
)

// The diagnostic headers of a dead letter (middleware.DeadLetter's
// PublishToDLQ) and of a scheduled message no queue took when it was due:
// the middleware exports them as middleware.HeaderDLX.
const (
	DLError      = "warren-dl-error"
	DLErrorType  = "warren-dl-error-type"
	DLAttempts   = "warren-dl-attempts"
	DLFirstFail  = "warren-dl-first-failure"
	DLLastFail   = "warren-dl-last-failure"
	DLExchange   = "warren-dl-exchange"
	DLRoutingKey = "warren-dl-routing-key"
	DLQueue      = "warren-dl-queue"
	DLHandler    = "warren-dl-handler"
	DLTraceID    = "warren-dl-trace-id"
	DLStack      = "warren-dl-stack"
)

// BrokerDeath reports the headers the broker writes about one life of a
// message in a queue (x-death and its summaries, a quorum queue's delivery
// count, a shovel's origin): a message published anew does not carry them.
func BrokerDeath(name string) bool {
	switch name {
	case "x-death", "x-delivery-count", "x-received-from":
		return true
	}
	return strings.HasPrefix(name, "x-first-death-") || strings.HasPrefix(name, "x-last-death-")
}
