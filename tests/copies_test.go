package tests

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// wholeMessage is a message with every AMQP property set and a header of
// every AMQP field type, its per-message TTL 1 s.
func wholeMessage() amqp.Publishing {
	stamp := time.Unix(1767225600, 0)
	return amqp.Publishing{
		Headers: amqp.Table{
			"h-string":  "text",
			"h-bool":    true,
			"h-int8":    int8(-8),
			"h-uint8":   uint8(8),
			"h-int16":   int16(-16),
			"h-uint16":  uint16(16),
			"h-int32":   int32(-32),
			"h-uint32":  uint32(32),
			"h-int64":   int64(-64),
			"h-float32": float32(1.5),
			"h-float64": 2.25,
			"h-decimal": amqp.Decimal{Scale: 2, Value: 12345},
			"h-time":    stamp,
			"h-bytes":   []byte("raw bytes"),
			"h-void":    nil,
			"h-array":   []any{"a", int32(1), amqp.Table{"k": "v"}},
			"h-table":   amqp.Table{"nested": amqp.Table{"n": int64(1)}, "s": "x"},
			// A user's own x- header is the user's, not the broker's.
			"x-tenant":    "acme",
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		},
		ContentType:     "application/json",
		ContentEncoding: "identity",
		DeliveryMode:    amqp.Transient,
		Priority:        5,
		CorrelationId:   "corr-1",
		ReplyTo:         "replies",
		Expiration:      "1000",
		MessageId:       "whole-1",
		Timestamp:       stamp,
		Type:            "order.created",
		UserId:          "guest", // the publishing user, or the broker refuses it
		AppId:           "shop",
		Body:            []byte(`{"order":42}`),
	}
}

// TestCopiesKeepEveryMessageWhole: a message goes through a failing handler
// to the dead-letter queue (PublishToDLQ, RejectToDLX) and to a delay queue;
// each copy is compared field by field with the original, and none expires
// with the original's TTL.
func TestCopiesKeepEveryMessageWhole(t *testing.T) {
	b := rabbittest.Shared(t)
	for _, tc := range []struct {
		name string
		mode middleware.DeadLetterMode
		// delayed: the copy is the delayed-retry republish, read from the
		// delay level where it waits (its delay an hour, so it stays there).
		delayed bool
		// brokerCopy: the broker made the copy (x-death records it).
		brokerCopy bool
		// poison: the route's marshaler refuses the delivery, so the copy
		// is made of the raw delivery.
		poison bool
	}{
		{name: "publish-to-dlq", mode: middleware.PublishToDLQ},
		{name: "reject-to-dlx", mode: middleware.RejectToDLX, brokerCopy: true},
		{name: "delayed-retry", delayed: true},
		{name: "poison-to-dlq", mode: middleware.PublishToDLQ, poison: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := b.Name("whole." + tc.name)
			b.Name(q + ".dlq")
			r := newRouter(t, b.URL, router.Config{})
			route := router.Route{
				Name: tc.name, Queue: topology.QueueSpec{Name: q, Durable: true},
				Retry:        router.RetrySettings{Disabled: true},
				DelayedRetry: router.DelayedRetrySettings{Disabled: true},
				DeadLetter:   router.DeadLetterSettings{Mode: tc.mode},
				Handler:      func(*message.Message) error { return errors.New("broken") },
			}
			if tc.poison {
				route.Marshaler = refusingMarshaler{}
			}
			target := q + ".dlq"
			if tc.delayed {
				level := time.Hour
				route.DelayedRetry = router.DelayedRetrySettings{Levels: []time.Duration{level}}
				// An hour is 2048+1024+512+16 s: the copy first waits in the
				// delay level of 2^11 s.
				target = delay.ScheduleQueue(11)
			}
			if err := r.AddRoute(route); err != nil {
				t.Fatal(err)
			}
			startRouter(t, r)

			original := wholeMessage()
			c := b.Dial()
			ch, err := c.Channel()
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.PublishWithContext(context.Background(), "", q, false, false, original); err != nil {
				t.Fatal(err)
			}
			waitQueueDepth(t, b.URL, target, 1, 20*time.Second)
			// The original's TTL is 1 s: three seconds of the broker's own
			// clock later the copy must still be there.
			brokerClockPasses(t, b, ch, tc.name, 3*time.Second)
			waitQueueDepth(t, b.URL, target, 1, 0)

			got := getOne(t, b.URL, target)
			compareCopy(t, original, got, q, tc.brokerCopy)
		})
	}
}

// refusingMarshaler decodes nothing: every delivery is poison.
type refusingMarshaler struct{ warren.DefaultMarshaler }

func (refusingMarshaler) Unmarshal(*amqp.Delivery) (*message.Message, error) {
	return nil, errors.New("cannot decode")
}

// brokerClockPasses returns once d has passed on the broker's TTL clock: a
// canary published with a TTL of d is dead-lettered when it has.
func brokerClockPasses(t *testing.T, b *rabbittest.Broker, ch *amqp.Channel, name string, d time.Duration) {
	t.Helper()
	canary, dead := b.Name(name+".canary"), b.Name(name+".canary.dead")
	if _, err := ch.QueueDeclare(dead, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(canary, false, false, false, false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "", canary, false, false, amqp.Publishing{Expiration: strconv.FormatInt(d.Milliseconds(), 10), Body: []byte("tick")}); err != nil {
		t.Fatal(err)
	}
	waitQueueDepth(t, b.URL, dead, 1, d+20*time.Second)
}

// compareCopy checks got, a copy of original consumed from queue, field by
// field: everything kept, the TTL moved (never carried), where it came from
// recorded.
func compareCopy(t *testing.T, original amqp.Publishing, got amqp.Delivery, queue string, brokerCopy bool) {
	t.Helper()
	same := func(field string, want, have any) {
		t.Helper()
		if !reflect.DeepEqual(want, have) {
			t.Errorf("%s: copy has %#v (%T), original %#v (%T)", field, have, have, want, want)
		}
	}
	same("body", original.Body, got.Body)
	same("message-id", original.MessageId, got.MessageId)
	same("content-type", original.ContentType, got.ContentType)
	same("content-encoding", original.ContentEncoding, got.ContentEncoding)
	same("delivery-mode", original.DeliveryMode, got.DeliveryMode)
	same("priority", original.Priority, got.Priority)
	same("correlation-id", original.CorrelationId, got.CorrelationId)
	same("reply-to", original.ReplyTo, got.ReplyTo)
	same("type", original.Type, got.Type)
	same("app-id", original.AppId, got.AppId)
	same("timestamp", original.Timestamp.Unix(), got.Timestamp.Unix())
	for k, v := range original.Headers {
		have, ok := got.Headers[k]
		if !ok {
			t.Errorf("header %s missing from the copy", k)
			continue
		}
		same("header "+k, v, have)
	}
	same("expiration (never carried into a dead-letter or delay queue)", "", got.Expiration)
	if brokerCopy {
		deaths, _ := got.Headers["x-death"].([]any)
		if len(deaths) == 0 {
			t.Fatalf("broker's copy without x-death: %v", got.Headers)
		}
		death, _ := deaths[0].(amqp.Table)
		same("x-death original-expiration", original.Expiration, death["original-expiration"])
		same("user-id", original.UserId, got.UserId)
		return
	}
	same("header "+ack.HeaderOriginalExpiration, original.Expiration, got.Headers[ack.HeaderOriginalExpiration])
	same("user-id (moved: the broker checks it against the publishing user)", "", got.UserId)
	same("header "+ack.HeaderOriginalUserID, original.UserId, got.Headers[ack.HeaderOriginalUserID])
	same("header "+ack.HeaderOriginalExchange, "", got.Headers[ack.HeaderOriginalExchange])
	same("header "+ack.HeaderOriginalRoutingKey, queue, got.Headers[ack.HeaderOriginalRoutingKey])
	same("header "+ack.HeaderOriginalQueue, queue, got.Headers[ack.HeaderOriginalQueue])
}
