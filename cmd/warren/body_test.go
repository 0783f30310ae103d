package main

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/payload"
)

// dlq show says what a body it cannot undo is, never prints it as garbage.
func TestShowDescribesWhatItCannotDecode(t *testing.T) {
	for want, d := range map[string]amqp.Delivery{
		"a claim check":    {Headers: amqp.Table{payload.HeaderClaimCheck: "0123", payload.HeaderClaimSize: int64(70_000_000)}},
		"encrypted":        {Body: []byte{0x9f, 0x01}, Headers: amqp.Table{payload.HeaderEncryption: "aes-256-gcm", payload.HeaderKeyID: "k2"}},
		"content-encoding": {Body: []byte{0x1f, 0x8b}, ContentEncoding: "gzip"},
		"binary, 3 bytes":  {Body: []byte{0xff, 0xfe, 0x00}},
		"\"order\": 1":     {Body: []byte(`{"order":1}`)},
	} {
		if got := describeBody(d); !strings.Contains(got, want) {
			t.Errorf("%q for %v, want it to say %q", got, d.Headers, want)
		}
	}
}

// TestReplayOfASealedDeadLetter: a dead letter of an encrypted message
// (its consumer lacked the key) is shown for what it is, replayed as it
// is, still sealed, and opens with the key once the consumer has it.
func TestReplayOfASealedDeadLetter(t *testing.T) {
	url, _ := newVhost(t)
	ch := dial(t, url)
	for _, q := range []string{"orders", "orders.dlq"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, err := payload.NewStaticKeys("k7", map[string][]byte{"k7": key})
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys}})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := m.Marshal("orders", message.NewMessage("sealed-1", []byte("card 4111")))
	if err != nil {
		t.Fatal(err)
	}
	sealed.Headers[middleware.HeaderDLErrorType] = "unknown_key"
	sealed.Headers[middleware.HeaderDLRoutingKey] = "orders"
	if err := ch.Publish("", "orders.dlq", false, false, sealed); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the dead letter", func() bool { return depth(t, ch, "orders.dlq") == 1 })
	show := cli(t, url, "", "dlq", "show", "orders.dlq")
	if show.code != 0 || !strings.Contains(show.stdout, "encrypted: aes-256-gcm with key k7") || strings.Contains(show.stdout, "card 4111") {
		t.Fatalf("show: exit %d:\n%s", show.code, show.stdout)
	}
	if r := cli(t, url, "", "dlq", "replay", "orders.dlq"); r.code != 0 {
		t.Fatalf("replay: exit %d: %s", r.code, r.stderr)
	}
	rabbittest.Eventually(t, 10*time.Second, "replayed", func() bool { return depth(t, ch, "orders") == 1 })
	d, ok, err := ch.Get("orders", true)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if !bytes.Equal(d.Body, sealed.Body) || d.Headers[payload.HeaderKeyID] != "k7" {
		t.Fatalf("the replayed message is not sealed as it was: headers %v", d.Headers)
	}
	got, err := m.Unmarshal(&d)
	if err != nil || string(got.Payload) != "card 4111" || got.UUID != "sealed-1" {
		t.Fatalf("opening the replayed message: %v", err)
	}
}
