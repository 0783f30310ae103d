package payload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/payload"
)

func key() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// deliver is what a consumer receives of pub.
func deliver(pub amqp.Publishing) *amqp.Delivery {
	return &amqp.Delivery{Body: pub.Body, Headers: pub.Headers, ContentEncoding: pub.ContentEncoding, MessageId: pub.MessageId}
}

// Every step, and all three at once, give the handler the body and
// metadata it was published with; the wire carries what each step says.
func TestRoundTrips(t *testing.T) {
	keys, err := payload.NewStaticKeys("k1", map[string][]byte{"k1": key()})
	if err != nil {
		t.Fatal(err)
	}
	store := payload.DirStore{Dir: t.TempDir()}
	big := bytes.Repeat([]byte("order line; "), 100_000) // 1.2 MB, compressible
	for name, cfg := range map[string]payload.Config{
		"compression": {Compression: &payload.Compression{}},
		"encryption":  {Encryption: &payload.Encryption{Keys: keys}},
		"claim check": {ClaimCheck: &payload.ClaimCheck{Store: store}},
		"all three":   {Compression: &payload.Compression{}, Encryption: &payload.Encryption{Keys: keys}, ClaimCheck: &payload.ClaimCheck{Store: store, Threshold: 1024}},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := payload.NewMarshaler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			msg := message.NewMessage("m-1", big)
			msg.Metadata.Set("tenant", "acme")
			pub, err := m.Marshal("orders", msg)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(pub.Body, big) {
				t.Fatal("the body went out as it is")
			}
			if cfg.Compression != nil && pub.ContentEncoding != "gzip" {
				t.Errorf("content-encoding %q", pub.ContentEncoding)
			}
			if cfg.Encryption != nil && (pub.Headers[payload.HeaderKeyID] != "k1" || pub.Headers[payload.HeaderEncryption] != "aes-256-gcm") {
				t.Errorf("headers %v", pub.Headers)
			}
			if cfg.ClaimCheck != nil && (len(pub.Body) != 0 || pub.Headers[payload.HeaderClaimCheck] == nil) {
				t.Errorf("claim check: %d bytes, headers %v", len(pub.Body), pub.Headers)
			}
			got, err := m.Unmarshal(deliver(pub))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Payload, big) || got.UUID != "m-1" || got.Metadata.Get("tenant") != "acme" || got.Metadata.Get(payload.HeaderKeyID) != "" {
				t.Fatalf("decoded: %d bytes, uuid %q, metadata %v", len(got.Payload), got.UUID, got.Metadata)
			}
		})
	}
}

// Keys rotate: messages of the old key stay readable while it is kept;
// once forgotten they are a permanent ErrUnknownKey; a body altered on the
// way, or passed off under another key's id, does not authenticate.
func TestKeyRotation(t *testing.T) {
	keys, _ := payload.NewStaticKeys("old", map[string][]byte{"old": key(), "new": key()})
	m, _ := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys}})
	before, _ := m.Marshal("t", message.NewMessage("before", []byte("secret 1")))
	if err := keys.Rotate("new"); err != nil {
		t.Fatal(err)
	}
	after, _ := m.Marshal("t", message.NewMessage("after", []byte("secret 2")))
	if after.Headers[payload.HeaderKeyID] != "new" {
		t.Fatalf("sealed with %v after the rotation", after.Headers[payload.HeaderKeyID])
	}
	for _, p := range []amqp.Publishing{before, after} {
		if _, err := m.Unmarshal(deliver(p)); err != nil {
			t.Fatalf("%s: %v", p.MessageId, err)
		}
	}
	keys.Forget("old")
	_, err := m.Unmarshal(deliver(before))
	if !errors.Is(err, payload.ErrUnknownKey) || ack.KindOf(err) != ack.PermanentKind {
		t.Fatalf("a forgotten key: %v, want a permanent ErrUnknownKey", err)
	}
	tampered := after
	tampered.Body = append([]byte(nil), after.Body...)
	tampered.Body[len(tampered.Body)-1] ^= 1
	if _, err := m.Unmarshal(deliver(tampered)); !errors.Is(err, payload.ErrTampered) {
		t.Fatalf("a tampered body: %v", err)
	}
	if _, err := payload.NewStaticKeys("x", map[string][]byte{"x": []byte("short")}); err == nil {
		t.Fatal("a short key accepted")
	}
}

// What the marshaler cannot undo is a permanent, typed error: an unknown
// content-encoding, an encryption without keys, a blob that is gone. A
// message that went through the steps already (a poison delivery's dead
// letter, made from its raw body) is not sealed again.
func TestWhatCannotBeDecoded(t *testing.T) {
	plain, _ := payload.NewMarshaler(payload.Config{})
	if _, err := plain.Unmarshal(&amqp.Delivery{Body: []byte("x"), ContentEncoding: "br"}); !errors.Is(err, payload.ErrUnknownEncoding) || ack.KindOf(err) != ack.PermanentKind {
		t.Fatalf("content-encoding br: %v", err)
	}
	if _, err := plain.Unmarshal(&amqp.Delivery{Body: []byte("x"), Headers: amqp.Table{payload.HeaderEncryption: "aes-256-gcm", payload.HeaderKeyID: "k"}}); !errors.Is(err, payload.ErrUnknownKey) {
		t.Fatalf("encrypted without keys: %v", err)
	}
	dir := t.TempDir()
	cc, _ := payload.NewMarshaler(payload.Config{ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: dir}, Threshold: 1}})
	pub, err := cc.Marshal("t", message.NewMessage("m", []byte("a body to check")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, pub.Headers[payload.HeaderClaimCheck].(string))); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Unmarshal(deliver(pub)); !errors.Is(err, payload.ErrBlobNotFound) || ack.KindOf(err) != ack.PermanentKind {
		t.Fatalf("a blob that is gone: %v", err)
	}
	keys, _ := payload.NewStaticKeys("k", map[string][]byte{"k": key()})
	enc, _ := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys}})
	sealed, _ := enc.Marshal("t", message.NewMessage("m", []byte("secret")))
	raw := message.NewMessage("m", sealed.Body)
	for k, v := range sealed.Headers {
		raw.Metadata.Set(k, v.(string))
	}
	again, _ := enc.Marshal("t", raw)
	if !bytes.Equal(again.Body, sealed.Body) {
		t.Fatal("a sealed message was sealed again")
	}
	if got, err := enc.Unmarshal(deliver(again)); err != nil || string(got.Payload) != "secret" {
		t.Fatalf("the re-published sealed message: %v", err)
	}
	for _, cfg := range []payload.Config{{Encryption: &payload.Encryption{}}, {ClaimCheck: &payload.ClaimCheck{}}, {Compression: &payload.Compression{Level: 42}}} {
		if _, err := payload.NewMarshaler(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// A blob older than the retention is deleted by Cleanup, a newer one kept:
// what a crash between the blob's write and the publish left behind is
// removed in time.
func TestDirStoreCleanup(t *testing.T) {
	s := payload.DirStore{Dir: t.TempDir()}
	ctx := context.Background()
	old, fresh := "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	for _, id := range []string{old, fresh} {
		if err := s.Put(ctx, id, bytes.NewReader([]byte("blob"))); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(s.Dir, old), past, past); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Cleanup(ctx, time.Now().Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("cleanup: %d, %v", n, err)
	}
	if _, err := s.Get(ctx, old); !errors.Is(err, payload.ErrBlobNotFound) {
		t.Fatalf("the old blob: %v", err)
	}
	r, err := s.Get(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := s.Get(ctx, "../etc/passwd"); !errors.Is(err, payload.ErrBlobNotFound) {
		t.Fatalf("a path for an id: %v", err)
	}
}

// A message encoded ahead (an outbox's row) is sent as it is by the same
// marshaler, or by a plain one, and reads back as the original; a body
// compression cannot shrink goes uncompressed; the caller's store is used.
func TestEncodeAhead(t *testing.T) {
	keys, _ := payload.NewStaticKeys("k1", map[string][]byte{"k1": key()})
	dir, elsewhere := t.TempDir(), t.TempDir()
	m, err := payload.NewMarshaler(payload.Config{Compression: &payload.Compression{Threshold: 10},
		Encryption: &payload.Encryption{Keys: keys}, ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: dir}, Threshold: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 8192)
	_, _ = rand.Read(random)
	text := bytes.Repeat([]byte("compressible "), 50)
	for _, body := range [][]byte{random, text} {
		msg := message.NewMessage("m", body)
		msg.Metadata.Set("tenant", "acme")
		if err := m.Encode(context.Background(), msg, payload.DirStore{Dir: elsewhere}); err != nil {
			t.Fatal(err)
		}
		first, err := m.Marshal("orders", msg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := m.Marshal("orders", msg)
		if err != nil || !bytes.Equal(first.Body, again.Body) || first.Headers[payload.HeaderKeyID] != "k1" {
			t.Fatalf("marshaled twice differently (%v)", err)
		}
		if len(body) == len(random) && (first.ContentEncoding != "" || first.Headers[payload.HeaderClaimCheck] == nil) {
			t.Fatalf("random body: content-encoding %q, headers %v", first.ContentEncoding, first.Headers)
		}
		if len(body) == len(text) && first.ContentEncoding != "gzip" {
			t.Fatalf("text body: content-encoding %q", first.ContentEncoding)
		}
		got, err := m.Unmarshal(deliver(first))
		if len(body) == len(random) {
			// Its blob is in the caller's store, not the marshaler's.
			if !errors.Is(err, payload.ErrBlobNotFound) {
				t.Fatalf("unmarshal from the wrong store: %v", err)
			}
			m2, _ := payload.NewMarshaler(payload.Config{Encryption: &payload.Encryption{Keys: keys}, ClaimCheck: &payload.ClaimCheck{Store: payload.DirStore{Dir: elsewhere}}})
			got, err = m2.Unmarshal(deliver(first))
		}
		if err != nil || !bytes.Equal(got.Payload, body) || got.Metadata.Get("tenant") != "acme" {
			t.Fatalf("decoded %v, %d bytes, %v", err, len(got.Payload), got.Metadata)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("%d blobs in the marshaler's store, want them in the caller's", len(entries))
	}
	if _, err := payload.NewMarshaler(payload.Config{ClaimCheck: &payload.ClaimCheck{Store: noDelete{}, DeleteOnAck: true}}); err == nil {
		t.Fatal("DeleteOnAck accepted a store that cannot delete")
	}
}

// noDelete is a Store without Delete.
type noDelete struct{ payload.Store }
