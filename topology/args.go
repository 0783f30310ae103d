package topology

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueType is x-queue-type.
type QueueType string

const (
	Classic QueueType = "classic"
	Quorum  QueueType = "quorum"
	Stream  QueueType = "stream"
)

// Overflow is x-overflow.
type Overflow string

const (
	DropHead         Overflow = "drop-head"
	RejectPublish    Overflow = "reject-publish"
	RejectPublishDLX Overflow = "reject-publish-dlx"
)

// DeadLetterStrategy is x-dead-letter-strategy (quorum queues).
type DeadLetterStrategy string

const (
	AtMostOnce  DeadLetterStrategy = "at-most-once"
	AtLeastOnce DeadLetterStrategy = "at-least-once"
)

// QueueArgs are a queue's x-arguments, typed. Zero fields are not sent.
// Durations are sent in milliseconds.
type QueueArgs struct {
	Type                 QueueType
	MessageTTL           time.Duration // x-message-ttl
	Expires              time.Duration // x-expires: delete the queue after this long unused
	MaxLength            int64         // x-max-length
	MaxLengthBytes       int64         // x-max-length-bytes
	Overflow             Overflow      // x-overflow
	DeadLetterExchange   string        // x-dead-letter-exchange
	DeadLetterRoutingKey string        // x-dead-letter-routing-key; set alone, it dead-letters through the default exchange
	DeadLetterStrategy   DeadLetterStrategy
	MaxPriority          int    // x-max-priority, 1-255 (classic queues)
	SingleActiveConsumer bool   // x-single-active-consumer
	QueueMode            string // x-queue-mode: "default" or "lazy" (classic queues)
	DeliveryLimit        int    // x-delivery-limit (quorum queues)
	// Extra holds any other argument. It must not repeat a typed field.
	Extra amqp.Table
}

var typedQueueArgs = []string{
	"x-queue-type", "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
	"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy", "x-max-priority",
	"x-single-active-consumer", "x-queue-mode", "x-delivery-limit",
}

// Table is the arguments as sent to the broker.
func (a QueueArgs) Table() amqp.Table {
	t := amqp.Table{}
	maps.Copy(t, a.Extra)
	if a.Type != "" {
		t["x-queue-type"] = string(a.Type)
	}
	if a.MessageTTL > 0 {
		t["x-message-ttl"] = a.MessageTTL.Milliseconds()
	}
	if a.Expires > 0 {
		t["x-expires"] = a.Expires.Milliseconds()
	}
	if a.MaxLength > 0 {
		t["x-max-length"] = a.MaxLength
	}
	if a.MaxLengthBytes > 0 {
		t["x-max-length-bytes"] = a.MaxLengthBytes
	}
	if a.Overflow != "" {
		t["x-overflow"] = string(a.Overflow)
	}
	if a.DeadLetterExchange != "" || a.DeadLetterRoutingKey != "" {
		t["x-dead-letter-exchange"] = a.DeadLetterExchange
	}
	if a.DeadLetterRoutingKey != "" {
		t["x-dead-letter-routing-key"] = a.DeadLetterRoutingKey
	}
	if a.DeadLetterStrategy != "" {
		t["x-dead-letter-strategy"] = string(a.DeadLetterStrategy)
	}
	if a.MaxPriority > 0 {
		t["x-max-priority"] = int64(a.MaxPriority)
	}
	if a.SingleActiveConsumer {
		t["x-single-active-consumer"] = true
	}
	if a.QueueMode != "" {
		t["x-queue-mode"] = a.QueueMode
	}
	if a.DeliveryLimit > 0 {
		t["x-delivery-limit"] = int64(a.DeliveryLimit)
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

func (a QueueArgs) validate(spec string, q QueueSpec) []error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, &SpecError{Spec: spec, Field: "Args." + field, Reason: reason})
	}
	switch a.Type {
	case "", Classic, Quorum, Stream:
	default:
		bad("Type", fmt.Sprintf("unknown queue type %q (want classic, quorum or stream)", a.Type))
	}
	if a.Type == Quorum || a.Type == Stream {
		if !q.Durable {
			bad("Type", string(a.Type)+" queues must be durable")
		}
		if q.Exclusive {
			bad("Type", string(a.Type)+" queues cannot be exclusive")
		}
		if q.AutoDelete {
			bad("Type", string(a.Type)+" queues cannot be auto-delete")
		}
	}
	for field, d := range map[string]time.Duration{"MessageTTL": a.MessageTTL, "Expires": a.Expires} {
		if d < 0 {
			bad(field, "must not be negative")
		} else if d > 0 && d < time.Millisecond {
			bad(field, "below 1ms; the broker counts in milliseconds")
		}
	}
	if a.MaxLength < 0 {
		bad("MaxLength", "must not be negative")
	}
	if a.MaxLengthBytes < 0 {
		bad("MaxLengthBytes", "must not be negative")
	}
	switch a.Overflow {
	case "", DropHead, RejectPublish, RejectPublishDLX:
	default:
		bad("Overflow", fmt.Sprintf("unknown %q (want drop-head, reject-publish or reject-publish-dlx)", a.Overflow))
	}
	switch a.DeadLetterStrategy {
	case "":
	case AtMostOnce, AtLeastOnce:
		if a.Type != Quorum {
			bad("DeadLetterStrategy", "only quorum queues have a dead-letter strategy")
		}
		if a.DeadLetterStrategy == AtLeastOnce && a.Overflow != RejectPublish {
			bad("DeadLetterStrategy", "at-least-once needs Overflow reject-publish")
		}
	default:
		bad("DeadLetterStrategy", fmt.Sprintf("unknown %q", a.DeadLetterStrategy))
	}
	if a.MaxPriority < 0 || a.MaxPriority > 255 {
		bad("MaxPriority", fmt.Sprintf("%d outside 1-255", a.MaxPriority))
	} else if a.MaxPriority > 0 && (a.Type == Quorum || a.Type == Stream) {
		bad("MaxPriority", "only classic queues have priorities")
	}
	switch a.QueueMode {
	case "", "default", "lazy":
		if a.QueueMode != "" && (a.Type == Quorum || a.Type == Stream) {
			bad("QueueMode", "only classic queues have a queue mode")
		}
	default:
		bad("QueueMode", fmt.Sprintf("unknown %q (want default or lazy)", a.QueueMode))
	}
	if a.DeliveryLimit < 0 {
		bad("DeliveryLimit", "must not be negative")
	} else if a.DeliveryLimit > 0 && a.Type != Quorum {
		bad("DeliveryLimit", "only quorum queues have a delivery limit")
	}
	if len(a.DeadLetterExchange) > maxNameLen {
		bad("DeadLetterExchange", "longer than 255 bytes")
	}
	errs = append(errs, validateExtra(spec, "Args.Extra", a.Extra, typedQueueArgs)...)
	return errs
}

// ExchangeArgs are an exchange's arguments, typed.
type ExchangeArgs struct {
	// AlternateExchange receives what this exchange cannot route.
	AlternateExchange string
	// Extra holds any other argument.
	Extra amqp.Table
}

// Table is the arguments as sent to the broker.
func (a ExchangeArgs) Table() amqp.Table {
	t := amqp.Table{}
	maps.Copy(t, a.Extra)
	if a.AlternateExchange != "" {
		t["alternate-exchange"] = a.AlternateExchange
	}
	if len(t) == 0 {
		return nil
	}
	return t
}

// validateExtra checks that an argument table can be encoded and does not
// repeat a typed field.
func validateExtra(spec, field string, t amqp.Table, typed []string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if slices.Contains(typed, k) {
			errs = append(errs, &SpecError{Spec: spec, Field: field, Reason: fmt.Sprintf("%q has a typed field; set that instead", k)})
		}
	}
	if err := t.Validate(); err != nil {
		errs = append(errs, &SpecError{Spec: spec, Field: field, Reason: "value of a type AMQP cannot carry: " + err.Error()})
	}
	return errs
}

// tableKey renders a table deterministically, for record keys and equality.
func tableKey(t amqp.Table) string {
	if len(t) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(t)) {
		fmt.Fprintf(&b, "%s=%v;", k, t[k])
	}
	return b.String()
}
