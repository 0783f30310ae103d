// Package headers names the AMQP headers warren adds for its own use,
// once for every package that writes, reads or strips them. None of them
// ever reaches a user's message metadata: the marshaler drops them on the
// way in, and copies of a message (retries, dead letters) drop them on the
// way out.
package headers

import "strings"

// PublishSeq is the header a confirm channel adds to mandatory messages: a
// basic.return carries no delivery tag, so this is how a return finds the
// publish it belongs to (PITFALLS 6).
const PublishSeq = "warren-publish-seq"

// ScheduleHeaderPrefix starts the headers that route a scheduled message
// through the delay levels (topology.Schedule).
const ScheduleHeaderPrefix = "warren-delay-"

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
