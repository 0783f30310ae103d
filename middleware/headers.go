package middleware

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
)

// Headers warren writes on republished and dead-lettered messages.
const (
	// HeaderFirstFailure is when the first attempt failed (RFC 3339), kept
	// across delayed retries.
	HeaderFirstFailure = "warren-first-failure"
	// HeaderRetryLevel is the delay of the level a message was sent to.
	HeaderRetryLevel = "warren-retry-level"

	HeaderDLError       = "warren-dl-error"
	HeaderDLErrorType   = "warren-dl-error-type"
	HeaderDLAttempts    = "warren-dl-attempts"
	HeaderDLFirstFail   = "warren-dl-first-failure"
	HeaderDLLastFail    = "warren-dl-last-failure"
	HeaderDLExchange    = "warren-dl-exchange"
	HeaderDLRoutingKey  = "warren-dl-routing-key"
	HeaderDLQueue       = "warren-dl-queue"
	HeaderDLHandler     = "warren-dl-handler"
	HeaderDLTraceID     = "warren-dl-trace-id"
	HeaderDLDisposition = "warren-dl-reason"
)

// republishable copies msg for publishing again: same UUID, payload and
// metadata (so the W3C trace context of its creation travels on), without
// the broker's own x- headers (a client-set x-death confuses the broker and
// is ignored since RabbitMQ 4.0) and without the AMQP properties that must
// not be copied blindly.
func republishable(msg *message.Message) *message.Message {
	out := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range msg.Metadata {
		if strings.HasPrefix(k, "x-") || headers.Internal(k) {
			continue
		}
		out.Metadata[k] = v
	}
	out.SetContext(msg.Context())
	return out
}

// queueOf is the queue msg was consumed from, "" for other Pub/Subs.
func queueOf(msg *message.Message) string {
	info, _ := ack.InfoOf(msg)
	return info.Queue
}
