package topology

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/internal/amqpname"
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
	QueueMode            string // x-queue-mode: "default" or "lazy" (classic queues; refused by RabbitMQ 4.3)
	// DeliveryLimit is x-delivery-limit (quorum queues): a message
	// delivered this many times is dead-lettered, or dropped when the
	// queue has no dead-letter target. 0 leaves the broker's default
	// (none on 3.x; 20 from RabbitMQ 4.0); -1 disables the limit (4.0 and
	// later).
	DeliveryLimit int
	// LeaderLocator is x-queue-leader-locator (quorum queues and streams):
	// where a new queue's leader goes. It replaces x-queue-master-locator,
	// refused by default from RabbitMQ 4.3.
	LeaderLocator LeaderLocator
	// ConsumerTimeout is x-consumer-timeout: how long a delivery may stay
	// unacknowledged before the broker closes its channel, for this
	// queue's consumers (RabbitMQ 3.12 and later; from 4.3, quorum queues
	// only evaluate it).
	ConsumerTimeout time.Duration
	// QuorumInitialGroupSize is x-quorum-initial-group-size: how many
	// replicas a new quorum queue starts with.
	QuorumInitialGroupSize int
	// MaxAge is x-max-age (streams): segments older than this are
	// discarded. Whole seconds.
	MaxAge time.Duration
	// StreamMaxSegmentSizeBytes is x-stream-max-segment-size-bytes
	// (streams).
	StreamMaxSegmentSizeBytes int64
	// StreamFilterSizeBytes is x-stream-filter-size-bytes (streams,
	// RabbitMQ 3.13 and later): the size of the Bloom filter of each chunk,
	// 16-255.
	StreamFilterSizeBytes int
	// Extra holds any other argument. It must not repeat a typed field.
	Extra amqp.Table
}

// LeaderLocator is where a replicated queue's leader is placed.
type LeaderLocator string

// The leader locators.
const (
	ClientLocal LeaderLocator = "client-local"
	Balanced    LeaderLocator = "balanced"
)

// typedQueueArgs are the queue arguments QueueArgs has a field for, by the
// field that sets each.
var typedQueueArgs = map[string]string{
	"x-queue-type": "Args.Type", "x-message-ttl": "Args.MessageTTL", "x-expires": "Args.Expires",
	"x-max-length": "Args.MaxLength", "x-max-length-bytes": "Args.MaxLengthBytes", "x-overflow": "Args.Overflow",
	"x-dead-letter-exchange": "Args.DeadLetterExchange", "x-dead-letter-routing-key": "Args.DeadLetterRoutingKey",
	"x-dead-letter-strategy": "Args.DeadLetterStrategy", "x-max-priority": "Args.MaxPriority",
	"x-single-active-consumer": "Args.SingleActiveConsumer", "x-queue-mode": "Args.QueueMode",
	"x-delivery-limit": "Args.DeliveryLimit", "x-queue-leader-locator": "Args.LeaderLocator",
	"x-consumer-timeout": "Args.ConsumerTimeout", "x-quorum-initial-group-size": "Args.QuorumInitialGroupSize",
	"x-max-age": "Args.MaxAge", "x-stream-max-segment-size-bytes": "Args.StreamMaxSegmentSizeBytes",
	"x-stream-filter-size-bytes": "Args.StreamFilterSizeBytes",
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
	if a.DeliveryLimit != 0 {
		t["x-delivery-limit"] = int64(a.DeliveryLimit)
	}
	if a.LeaderLocator != "" {
		t["x-queue-leader-locator"] = string(a.LeaderLocator)
	}
	if a.ConsumerTimeout > 0 {
		t["x-consumer-timeout"] = a.ConsumerTimeout.Milliseconds()
	}
	if a.QuorumInitialGroupSize > 0 {
		t["x-quorum-initial-group-size"] = int64(a.QuorumInitialGroupSize)
	}
	if a.MaxAge > 0 {
		t["x-max-age"] = fmt.Sprintf("%ds", int64(a.MaxAge/time.Second))
	}
	if a.StreamMaxSegmentSizeBytes > 0 {
		t["x-stream-max-segment-size-bytes"] = a.StreamMaxSegmentSizeBytes
	}
	if a.StreamFilterSizeBytes > 0 {
		t["x-stream-filter-size-bytes"] = int64(a.StreamFilterSizeBytes)
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
		if !may(a.Type, Quorum) {
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
	if a.DeliveryLimit < -1 {
		bad("DeliveryLimit", "must be -1 (no limit), 0 (the broker's default) or positive")
	} else if a.DeliveryLimit != 0 && !may(a.Type, Quorum) {
		bad("DeliveryLimit", "only quorum queues have a delivery limit")
	}
	switch a.LeaderLocator {
	case "":
	case ClientLocal, Balanced:
		if !may(a.Type, Quorum) && !may(a.Type, Stream) {
			bad("LeaderLocator", "only quorum queues and streams have a leader")
		}
	default:
		bad("LeaderLocator", fmt.Sprintf("unknown %q (want client-local or balanced)", a.LeaderLocator))
	}
	if a.ConsumerTimeout < 0 || (a.ConsumerTimeout > 0 && a.ConsumerTimeout < time.Millisecond) {
		bad("ConsumerTimeout", "must be at least 1ms, or 0 for the broker's default")
	}
	if a.QuorumInitialGroupSize < 0 {
		bad("QuorumInitialGroupSize", "must not be negative")
	} else if a.QuorumInitialGroupSize > 0 && !may(a.Type, Quorum) {
		bad("QuorumInitialGroupSize", "only quorum queues have an initial group size")
	}
	if a.MaxAge < 0 || (a.MaxAge > 0 && a.MaxAge%time.Second != 0) {
		bad("MaxAge", "must be whole seconds")
	}
	if a.StreamMaxSegmentSizeBytes < 0 {
		bad("StreamMaxSegmentSizeBytes", "must not be negative")
	}
	if a.StreamFilterSizeBytes != 0 && (a.StreamFilterSizeBytes < 16 || a.StreamFilterSizeBytes > 255) {
		bad("StreamFilterSizeBytes", fmt.Sprintf("%d outside 16-255", a.StreamFilterSizeBytes))
	}
	if (a.MaxAge > 0 || a.StreamMaxSegmentSizeBytes > 0 || a.StreamFilterSizeBytes > 0) && !may(a.Type, Stream) {
		bad("Type", "x-max-age and the x-stream-* arguments are for streams (Type stream)")
	}
	if len(a.DeadLetterExchange) > amqpname.MaxLen {
		bad("DeadLetterExchange", "longer than 255 bytes")
	}
	errs = append(errs, validateExtra(spec, "Args.Extra", a.Extra, typedQueueArgs)...)
	return errs
}

// may reports whether a queue of type typ can be of type want: an empty
// type is the vhost's default queue type (default_queue_type, RabbitMQ
// 3.11 and later; quorum on many 4.x deployments), not necessarily classic.
func may(typ, want QueueType) bool { return typ == "" || typ == want }

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
// repeat a typed field (typed: argument name to the field that sets it).
func validateExtra(spec, field string, t amqp.Table, typed map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if typedField, ok := typed[k]; ok {
			errs = append(errs, &SpecError{Spec: spec, Field: field, Reason: fmt.Sprintf("%q has a typed field, %s; set that instead", k, typedField)})
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
