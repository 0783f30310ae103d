package ack

import (
	"reflect"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// AttemptHeader is warren's count of the attempts a message had before it
// was published again for a delayed retry. RabbitMQ 4.0+ ignores an x-death
// set by a client, so republishing needs a header of its own (PITFALLS 16).
const AttemptHeader = "warren-attempt"

// The broker's own counters, read by PreviousAttempts.
const (
	// DeathHeader is x-death: one table per {queue, reason}, newest first.
	DeathHeader = "x-death"
	// DeliveryCountHeader is x-delivery-count (quorum queues: failed
	// deliveries before this one).
	DeliveryCountHeader = "x-delivery-count"
	// AcquiredCountHeader is x-acquired-count (quorum queues, RabbitMQ 4.x:
	// acquisitions before this one).
	AcquiredCountHeader = "x-acquired-count"
)

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

// AttemptOf is the first attempt of a delivery with info (before any
// in-process retry).
func AttemptOf(info Info) int { return info.PreviousAttempts + 1 }

func metadataAttempts(msg *message.Message) int {
	if msg == nil {
		return 0
	}
	if n, err := strconv.Atoi(msg.Metadata.Get(AttemptHeader)); err == nil && n >= 0 {
		return n
	}
	return 0
}

// PreviousAttempts counts the executions a delivery had before, from what
// warren and the broker wrote on it: AttemptHeader (attempts before it was
// republished for a delayed retry) plus the redeliveries of this copy, from
// the first of x-acquired-count, x-delivery-count, the count of the x-death
// element for {queue, rejected} (not a sum of elements, not element 0:
// PITFALLS 16), or the redelivered flag (1). The Subscriber adds what it
// remembers itself; a count lost with a process restart is a lower bound.
func PreviousAttempts(headers map[string]any, queue string, redelivered bool) int {
	prev := 0
	if n, ok := asInt(headers[AttemptHeader]); ok && n >= 0 {
		prev = int(n)
	}
	for _, key := range []string{AcquiredCountHeader, DeliveryCountHeader} {
		if n, ok := asInt(headers[key]); ok && n >= 0 {
			return prev + int(n)
		}
	}
	if n, ok := DeathCount(headers, queue, "rejected"); ok {
		return prev + int(n)
	}
	if redelivered {
		return prev + 1
	}
	return prev
}

// DeathCount returns the count of the x-death element for {queue, reason}.
func DeathCount(headers map[string]any, queue, reason string) (int64, bool) {
	deaths, ok := headers[DeathHeader].([]any)
	if !ok {
		return 0, false
	}
	for _, d := range deaths {
		t, ok := asTable(d)
		if !ok {
			continue
		}
		if t["queue"] == queue && t["reason"] == reason {
			return asInt(t["count"])
		}
	}
	return 0, false
}

func asTable(v any) (map[string]any, bool) {
	if t, ok := v.(map[string]any); ok {
		return t, true
	}
	// amqp091's Table is a named map type this package does not import.
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil, false
	}
	m := make(map[string]any, rv.Len())
	for it := rv.MapRange(); it.Next(); {
		m[it.Key().String()] = it.Value().Interface()
	}
	return m, true
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		return int64(n), true
	case string:
		i, err := strconv.ParseInt(n, 10, 64)
		return i, err == nil
	}
	return 0, false
}
