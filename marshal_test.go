package warren_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
)

func TestMarshalRoundTrip(t *testing.T) {
	m := warren.DefaultMarshaler{}
	msg := message.NewMessage("uuid-1", []byte("payload"))
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set(warren.MetaContentType, "application/json")
	msg.Metadata.Set(warren.MetaCorrelationID, "corr")
	msg.Metadata.Set(warren.MetaReplyTo, "replies")
	msg.Metadata.Set(warren.MetaExpiration, "60000")
	msg.Metadata.Set(warren.MetaPriority, "5")
	msg.Metadata.Set(warren.MetaType, "order.created")
	msg.Metadata.Set(warren.MetaAppID, "shop")
	msg.Metadata.Set(warren.MetaTimestamp, "2026-01-02T03:04:05Z")
	p, err := m.Marshal("topic", msg)
	if err != nil {
		t.Fatal(err)
	}
	if p.MessageId != "uuid-1" || p.DeliveryMode != amqp.Persistent || p.ContentType != "application/json" ||
		p.CorrelationId != "corr" || p.ReplyTo != "replies" || p.Expiration != "60000" || p.Priority != 5 ||
		p.Type != "order.created" || p.AppId != "shop" || p.Timestamp.Year() != 2026 || p.Headers["tenant"] != "acme" {
		t.Fatalf("publishing %+v", p)
	}
	if _, ok := p.Headers[warren.MetaContentType]; ok {
		t.Fatal("a property key leaked into headers")
	}
	d := amqp.Delivery{MessageId: p.MessageId, Body: p.Body, Headers: p.Headers, ContentType: p.ContentType,
		CorrelationId: p.CorrelationId, ReplyTo: p.ReplyTo, Expiration: p.Expiration, Priority: p.Priority,
		Type: p.Type, AppId: p.AppId, Timestamp: p.Timestamp}
	back, err := m.Unmarshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	if back.UUID != msg.UUID || string(back.Payload) != "payload" {
		t.Fatalf("round trip: %+v", back)
	}
	for k, v := range msg.Metadata {
		if back.Metadata.Get(k) != v {
			t.Errorf("metadata %s: %q, want %q", k, back.Metadata.Get(k), v)
		}
	}
	if tr, _ := (warren.DefaultMarshaler{Transient: true}).Marshal("t", msg); tr.DeliveryMode != amqp.Transient {
		t.Fatal("Transient ignored")
	}
}

func TestMarshalRejectsBadPropertyMetadata(t *testing.T) {
	for k, v := range map[string]string{warren.MetaPriority: "high", warren.MetaExpiration: "1m", warren.MetaTimestamp: "yesterday"} {
		msg := message.NewMessage("id", nil)
		msg.Metadata.Set(k, v)
		_, err := warren.DefaultMarshaler{}.Marshal("t", msg)
		if !errors.Is(err, warren.ErrInvalidMessage) || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: %v", k, v, err)
		}
	}
}

// Headers that are not strings never fail decoding (watermill 65, 184).
func TestUnmarshalNonStringHeaders(t *testing.T) {
	ts := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	d := amqp.Delivery{Headers: amqp.Table{
		"x-death":               []any{amqp.Table{"count": int64(2), "queue": "work", "reason": "rejected", "time": ts}},
		"x-delivery-count":      int64(3),
		"int32":                 int32(-7),
		"float":                 1.5,
		"bool":                  true,
		"bytes":                 []byte("raw"),
		"time":                  ts,
		"table":                 amqp.Table{"a": int8(1)},
		"decimal":               amqp.Decimal{Scale: 2, Value: 12345},
		"nil":                   nil,
		warren.LegacyUUIDHeader: "legacy-id",
	}}
	msg, err := warren.DefaultMarshaler{}.Unmarshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"x-delivery-count": "3", "int32": "-7", "float": "1.5", "bool": "true", "bytes": "raw",
		"time": "2026-05-06T07:08:09Z", "table": `{"a":1}`, "decimal": "12345e-2", "nil": "",
	}
	for k, v := range want {
		if got := msg.Metadata.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if !strings.Contains(msg.Metadata.Get("x-death"), `"queue":"work"`) {
		t.Errorf("x-death: %q", msg.Metadata.Get("x-death"))
	}
	if msg.UUID != "legacy-id" {
		t.Errorf("UUID %q, want the watermill-amqp header as fallback", msg.UUID)
	}
	// A delivery without an id, from a producer that sets none, gets a
	// version 4 UUID of its own: two such deliveries, two ids.
	m2, _ := warren.DefaultMarshaler{}.Unmarshal(&amqp.Delivery{})
	m3, _ := warren.DefaultMarshaler{}.Unmarshal(&amqp.Delivery{})
	for _, id := range []string{m2.UUID, m3.UUID} {
		if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
			t.Errorf("id %q for a delivery without one: want a version 4 UUID", id)
		}
	}
	if m2.UUID == m3.UUID {
		t.Errorf("two deliveries without an id both got %q", m2.UUID)
	}
}

func FuzzUnmarshalHeaders(f *testing.F) {
	f.Add("k", "v", int64(1), []byte("b"), true)
	f.Fuzz(func(t *testing.T, key, s string, n int64, b []byte, flag bool) {
		d := amqp.Delivery{MessageId: s, Body: b, Headers: amqp.Table{
			key: s, key + "n": n, key + "b": b, key + "f": flag,
			key + "t": amqp.Table{key: []any{n, s, amqp.Table{"x": b}}},
		}}
		if _, err := (warren.DefaultMarshaler{}).Unmarshal(&d); err != nil {
			t.Fatalf("decoding failed: %v", err)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	_, err := warren.NewPublisher(nil, warren.PublisherConfig{})
	var ce *conn.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("nil conn: %v", err)
	}
	for _, cfg := range []warren.SubscriberConfig{{MaxInFlight: -1}, {MaxInFlight: 10, Prefetch: 5}, {NackDisposition: 99}, {CloseTimeout: -1}} {
		c := cfg
		if err := validateSub(&c); !errors.Is(err, conn.ErrInvalidConfig) {
			t.Errorf("%+v accepted: %v", cfg, err)
		}
	}
	for _, cfg := range []warren.PublisherConfig{{ConfirmChannels: -1}, {PublishTimeout: -1}, {ConfirmChannels: 1000}} {
		c := cfg
		if err := validatePub(&c); !errors.Is(err, conn.ErrInvalidConfig) {
			t.Errorf("%+v accepted: %v", cfg, err)
		}
	}
}

func validateSub(c *warren.SubscriberConfig) error { return c.ValidateWithDefaults() }
func validatePub(c *warren.PublisherConfig) error  { return c.ValidateWithDefaults() }

// TestMarshalCopyKeepsHeaderTypes: a copy's header goes out with its AMQP
// type while its metadata still shows that value; one a copier changed goes
// out as the new string. Delivery mode comes from metadata when set.
func TestMarshalCopyKeepsHeaderTypes(t *testing.T) {
	orig := message.NewMessage("id", []byte("b"))
	orig.SetContext(ack.NewContext(context.Background(), ack.Info{Headers: map[string]any{"n": int32(7), "m": int64(8)}}))
	orig.Metadata["n"] = "7"
	orig.Metadata["m"] = "8"
	orig.Metadata[warren.MetaDeliveryMode] = "1"
	cp := ack.Copy(orig)
	cp.Metadata["m"] = "changed"
	p, err := warren.DefaultMarshaler{}.Marshal("t", cp)
	if err != nil {
		t.Fatal(err)
	}
	if p.Headers["n"] != int32(7) || p.Headers["m"] != "changed" || p.DeliveryMode != amqp.Transient {
		t.Fatalf("headers %#v, delivery mode %d", p.Headers, p.DeliveryMode)
	}
	cp.Metadata[warren.MetaDeliveryMode] = "3"
	if _, err := (warren.DefaultMarshaler{}).Marshal("t", cp); !errors.Is(err, warren.ErrInvalidMessage) {
		t.Fatalf("delivery mode 3: %v", err)
	}
}
