package ack

import (
	"reflect"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// AttemptHeader is warren's own counter of previous attempts, set on
// messages republished for a delayed retry. RabbitMQ 4.0+ ignores an x-death
// set by a client, so republishing needs a header of its own (PITFALLS 16).
const AttemptHeader = "warren-attempt"

// Attempt is which attempt at processing msg this is, counting from 1. The
// first source present wins:
//
//  1. warren's AttemptHeader (previous attempts, from delayed retries);
//  2. x-acquired-count (RabbitMQ 4.x quorum queues: previous acquisitions);
//  3. x-delivery-count (quorum queues: previous failed deliveries);
//  4. the count of the x-death element for {this queue, rejected} (not a sum
//     of elements, not element 0: PITFALLS 16);
//  5. the redelivered flag (2 when set).
//
// A message without delivery info is attempt 1.
func Attempt(msg *message.Message) int {
	info, ok := InfoOf(msg)
	if !ok {
		if v := msg.Metadata.Get(AttemptHeader); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return n + 1
			}
		}
		return 1
	}
	return AttemptOf(info)
}

// AttemptOf is Attempt from delivery info alone.
func AttemptOf(info Info) int {
	for _, key := range []string{AttemptHeader, "x-acquired-count", "x-delivery-count"} {
		if n, ok := asInt(info.Headers[key]); ok && n >= 0 {
			return int(n) + 1
		}
	}
	if n, ok := DeathCount(info.Headers, info.Queue, "rejected"); ok {
		return int(n) + 1
	}
	if info.Redelivered {
		return 2
	}
	return 1
}

// DeathCount returns the count of the x-death element for {queue, reason}.
func DeathCount(headers map[string]any, queue, reason string) (int64, bool) {
	deaths, ok := headers["x-death"].([]any)
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
