package warren

import (
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/internal/msgid"
)

// Metadata keys that map to AMQP properties instead of headers. Set them on
// a message to set the property; read them on a received message.
const (
	MetaContentType     = headers.MetaContentType
	MetaContentEncoding = headers.MetaContentEncoding
	MetaCorrelationID   = headers.MetaCorrelationID
	MetaReplyTo         = headers.MetaReplyTo
	MetaExpiration      = headers.MetaExpiration // milliseconds, as AMQP wants it
	MetaPriority        = headers.MetaPriority   // 0-9
	MetaType            = headers.MetaType
	MetaAppID           = headers.MetaAppID
	MetaUserID          = headers.MetaUserID
	MetaTimestamp       = headers.MetaTimestamp // RFC 3339
	// MetaDeliveryMode is "1" (transient) or "2" (persistent); absent, the
	// marshaler's default applies.
	MetaDeliveryMode = headers.MetaDeliveryMode
)

// LegacyUUIDHeader is where watermill-amqp keeps the message UUID; read as a
// fallback when message-id is empty.
const LegacyUUIDHeader = "_watermill_message_uuid"

// Marshaler converts between Watermill messages and AMQP.
type Marshaler interface {
	Marshal(topic string, msg *message.Message) (amqp.Publishing, error)
	// Unmarshal decodes a delivery. An error makes the delivery poison: it
	// is rejected without requeue (to the queue's dead-letter exchange) and
	// reported, never requeued in a loop.
	Unmarshal(d *amqp.Delivery) (*message.Message, error)
}

// AckObserver is an optional interface of a Marshaler: a Subscriber calls
// Acked with each delivery it unmarshaled, handed out and then acked on a
// queue (not a stream's, not a poison delivery), after the ack went to the
// broker. payload's claim check deletes a blob there (DeleteOnAck). An
// error is logged; the delivery stays acked.
type AckObserver interface {
	Acked(d *amqp.Delivery) error
}

// DefaultMarshaler puts the UUID in message-id, the payload in the body,
// metadata in string headers (MetaX keys in AMQP properties) and marks
// messages persistent unless MetaDeliveryMode says otherwise. Decoding never
// fails on header types: values that are not strings (x-death,
// x-delivery-count, numbers, timestamps, tables, arrays) appear in metadata
// as strings (tables and arrays as JSON) and stay raw in ack.Info.Headers;
// a copy made by ack.Copy publishes them with their original types again.
type DefaultMarshaler struct {
	// Transient publishes with delivery mode 1 the messages whose metadata
	// has no MetaDeliveryMode. Default: persistent.
	Transient bool
	// WatermillAMQP makes every message readable by a watermill-amqp
	// consumer, for services on either library sharing queues during a
	// migration (docs/MIGRATING.md): the UUID also goes in LegacyUUIDHeader,
	// where watermill-amqp reads it (it does not read message-id), and
	// every header goes out as a string, copies' included (watermill-amqp's
	// marshaler refuses any other type and requeues the message at once,
	// forever): a typed header goes out as its string form (headers.String),
	// so a dead letter's warren-original-x-death is JSON text. A Publisher
	// with this marshaler hands scheduled messages over by republishing them
	// (PublisherConfig.ForwardScheduled), so that they arrive without the
	// broker's x-death array; a router route with it does the same with its
	// delayed retries. warren reads LegacyUUIDHeader whenever message-id is
	// empty, with or without this; a delivery with neither (a producer that
	// sets no id) gets a random version 4 UUID, as watermill.NewUUID makes.
	WatermillAMQP bool
}

// Marshal implements Marshaler.
func (m DefaultMarshaler) Marshal(_ string, msg *message.Message) (amqp.Publishing, error) {
	if msg == nil {
		return amqp.Publishing{}, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	p := amqp.Publishing{MessageId: msg.UUID, Body: msg.Payload, DeliveryMode: amqp.Persistent}
	if m.Transient {
		p.DeliveryMode = amqp.Transient
	}
	if m.WatermillAMQP {
		p.Headers = amqp.Table{LegacyUUIDHeader: msg.UUID}
	}
	// A copy (ack.Copy) keeps its headers' AMQP types: a header whose
	// metadata is still the string form of its typed value goes out typed.
	// Looked up with the first header, not for every message.
	var typed map[string]any
	typedLooked := false
	for k, v := range msg.Metadata {
		if headers.Internal(k) {
			continue
		}
		switch k {
		case MetaContentType:
			p.ContentType = v
		case MetaContentEncoding:
			p.ContentEncoding = v
		case MetaCorrelationID:
			p.CorrelationId = v
		case MetaReplyTo:
			p.ReplyTo = v
		case MetaExpiration:
			if _, err := strconv.ParseUint(v, 10, 32); err != nil {
				return p, fmt.Errorf("%w: metadata %s %q: want milliseconds", ErrInvalidMessage, k, v)
			}
			p.Expiration = v
		case MetaPriority:
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return p, fmt.Errorf("%w: metadata %s %q: want 0-255", ErrInvalidMessage, k, v)
			}
			p.Priority = uint8(n)
		case MetaType:
			p.Type = v
		case MetaAppID:
			p.AppId = v
		case MetaUserID:
			p.UserId = v
		case MetaTimestamp:
			ts, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return p, fmt.Errorf("%w: metadata %s %q: want RFC 3339", ErrInvalidMessage, k, v)
			}
			p.Timestamp = ts
		case MetaDeliveryMode:
			switch v {
			case "1":
				p.DeliveryMode = amqp.Transient
			case "2":
				p.DeliveryMode = amqp.Persistent
			default:
				return p, fmt.Errorf("%w: metadata %s %q: want 1 (transient) or 2 (persistent)", ErrInvalidMessage, k, v)
			}
		default:
			if p.Headers == nil {
				p.Headers = make(amqp.Table, len(msg.Metadata))
			}
			if !typedLooked && !m.WatermillAMQP {
				typed, typedLooked = headers.Typed(msg.Context()), true
			}
			if t, ok := typed[k]; ok && headers.String(t) == v {
				p.Headers[k] = t
			} else {
				p.Headers[k] = v
			}
		}
	}
	return p, nil
}

// Unmarshal implements Marshaler; it fails only for a nil delivery
// (ErrPoison), never for a header's type.
func (m DefaultMarshaler) Unmarshal(d *amqp.Delivery) (*message.Message, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: nil delivery", ErrPoison)
	}
	id := d.MessageId
	if id == "" {
		if s, ok := d.Headers[LegacyUUIDHeader].(string); ok {
			id = s
		} else {
			id = msgid.New()
		}
	}
	msg := message.NewMessage(id, d.Body)
	for k, v := range d.Headers {
		if k == LegacyUUIDHeader || headers.Internal(k) {
			continue // never user metadata
		}
		msg.Metadata[k] = headers.String(v)
	}
	set := func(k, v string) {
		if v != "" {
			msg.Metadata[k] = v
		}
	}
	set(MetaContentType, d.ContentType)
	set(MetaContentEncoding, d.ContentEncoding)
	set(MetaCorrelationID, d.CorrelationId)
	set(MetaReplyTo, d.ReplyTo)
	set(MetaExpiration, d.Expiration)
	set(MetaType, d.Type)
	set(MetaAppID, d.AppId)
	set(MetaUserID, d.UserId)
	if d.DeliveryMode == amqp.Transient || d.DeliveryMode == amqp.Persistent {
		msg.Metadata[MetaDeliveryMode] = strconv.Itoa(int(d.DeliveryMode))
	}
	if d.Priority != 0 {
		msg.Metadata[MetaPriority] = strconv.Itoa(int(d.Priority))
	}
	if !d.Timestamp.IsZero() {
		msg.Metadata[MetaTimestamp] = d.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return msg, nil
}
