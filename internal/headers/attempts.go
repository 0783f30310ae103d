package headers

import (
	"context"
	"reflect"
	"strconv"
)

// Attempt is warren's count of the attempts a message had before it was
// published again for a delayed retry (exported as ack.AttemptHeader).
const Attempt = "warren-attempt"

// The broker's own counters, read by PreviousAttempts.
const (
	// Death is x-death: one table per {queue, reason}, newest first.
	Death = "x-death"
	// DeliveryCount is x-delivery-count (quorum queues: failed deliveries
	// before this one).
	DeliveryCount = "x-delivery-count"
	// AcquiredCount is x-acquired-count (quorum queues, RabbitMQ 4.x:
	// acquisitions before this one).
	AcquiredCount = "x-acquired-count"
)

// PreviousAttempts counts the executions a delivery had before, from what
// warren and the broker wrote on it: Attempt (attempts before it was
// republished for a delayed retry) plus the redeliveries of this copy, from
// the first of x-acquired-count, x-delivery-count, the count of the x-death
// element for {queue, rejected} (not a sum of elements, not element 0: the
// broker keeps one element per {queue, reason} with its own count, newest
// first; PITFALLS 16), or the redelivered flag (1). The Subscriber adds what
// it remembers itself; a count lost with a process restart is a lower bound.
func PreviousAttempts(headers map[string]any, queue string, redelivered bool) int {
	prev := 0
	if n, ok := asInt(headers[Attempt]); ok && n >= 0 {
		prev = int(n)
	}
	for _, key := range []string{AcquiredCount, DeliveryCount} {
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
	deaths, ok := headers[Death].([]any)
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

type typedKey struct{}

// WithTyped keeps the AMQP-typed values of a copy's headers (ack.Copy) in
// its context: metadata holds only their string forms.
func WithTyped(ctx context.Context, typed map[string]any) context.Context {
	return context.WithValue(ctx, typedKey{}, typed)
}

// Typed returns what WithTyped kept, nil for a message that is not a copy.
// A marshaler publishes a header with its typed value while its metadata
// still holds the string form of that value: a header a copier changed is
// published as the new string.
func Typed(ctx context.Context) map[string]any {
	if ctx == nil {
		return nil
	}
	t, _ := ctx.Value(typedKey{}).(map[string]any)
	return t
}
