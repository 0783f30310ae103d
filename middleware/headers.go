package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
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

// queueOf is the queue msg was consumed from, "" for other Pub/Subs.
func queueOf(msg *message.Message) string {
	info, _ := ack.InfoOf(msg)
	return info.Queue
}
