package middleware

import (
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

	HeaderDLError      = headers.DLError
	HeaderDLErrorType  = headers.DLErrorType
	HeaderDLAttempts   = headers.DLAttempts
	HeaderDLFirstFail  = headers.DLFirstFail
	HeaderDLLastFail   = headers.DLLastFail
	HeaderDLExchange   = headers.DLExchange
	HeaderDLRoutingKey = headers.DLRoutingKey
	HeaderDLQueue      = headers.DLQueue
	HeaderDLHandler    = headers.DLHandler
	HeaderDLTraceID    = headers.DLTraceID
	// HeaderDLStack is the stack of a handler that panicked (truncated).
	HeaderDLStack = headers.DLStack
)

// queueOf is the queue msg was consumed from, "" for other Pub/Subs.
func queueOf(msg *message.Message) string {
	info, _ := ack.InfoOf(msg)
	return info.Queue
}
