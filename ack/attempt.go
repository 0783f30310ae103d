package ack

import (
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/internal/headers"
)

// AttemptHeader is warren's count of the attempts a message had before it
// was published again for a delayed retry. RabbitMQ 4.0+ ignores an x-death
// set by a client, so republishing needs a header of its own (the broker
// keeps x-death to itself from 4.0 on).
const AttemptHeader = headers.Attempt

// Attempt is which execution of the handler this is, counting from 1: one
// meaning across in-process retries (the Retry middleware counts each
// execution with NextAttempt), delayed retries through delay queues
// (AttemptHeader) and redeliveries by the broker. A handler retried twice
// in-process, then redelivered, sees 1, 2, 3, 4.
//
// For a delivery it is Info.PreviousAttempts + 1 plus the in-process
// retries; without delivery info (another Pub/Sub, a test) the previous
// attempts come from AttemptHeader in the metadata.
func Attempt(msg *message.Message) int {
	s := stateOf(msg)
	if s == nil {
		return metadataAttempts(msg) + 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.previous + 1 + s.retries
}

// NextAttempt records that the handler is about to run again on msg in the
// same process (an in-process retry) and returns that attempt's number.
// msg needs a slot (see Track; a warren Subscriber's messages have one).
func NextAttempt(msg *message.Message) int {
	s := stateOf(msg)
	if s == nil {
		return Attempt(msg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retries++
	return s.previous + 1 + s.retries
}

func metadataAttempts(msg *message.Message) int {
	if msg == nil {
		return 0
	}
	if n, err := strconv.Atoi(msg.Metadata.Get(AttemptHeader)); err == nil && n >= 0 {
		return n
	}
	return 0
}
