package outbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/pg/blobstore"
	"github.com/warrenmq/warren/pg/outbox"
	"github.com/warrenmq/warren/warrentest"
)

// TestOutboxClaimChecksInItsTransaction: an outbox with payload steps
// writes a large body's blob in the caller's transaction (none after a
// rollback, none visible before the commit, and the row holds only the
// reference), sealed before it is claim-checked; the relay sends it as it
// is through a Publisher with the same marshaler, the consumer reads the
// original, and its ack deletes the blob (DeleteOnAck).
func TestOutboxClaimChecksInItsTransaction(t *testing.T) {
	b := warrentest.New(t)
	pool, _, _ := setup(t)
	ctx := context.Background()
	bs, err := blobstore.New(pool, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys, err := payload.NewStaticKeys("k1", map[string][]byte{"k1": key})
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.NewMarshaler(payload.Config{
		Compression: &payload.Compression{Threshold: 100},
		Encryption:  &payload.Encryption{Keys: keys},
		ClaimCheck:  &payload.ClaimCheck{Store: bs, Threshold: 64 << 10, DeleteOnAck: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(outbox.Config{Payload: m})
	if err != nil {
		t.Fatal(err)
	}
	chunks := func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_blobs").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	big := make([]byte, 3<<20) // random: compression cannot shrink it under the threshold
	_, _ = rand.Read(big)
	small := bytes.Repeat([]byte("a small, compressible order line "), 20)
	write := func() (commit func()) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in := []*message.Message{message.NewMessage("small", small), message.NewMessage("big", big)}
		if err := ob.Write(ctx, outbox.Pgx(tx), "orders", in...); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(in[1].Payload, big) || len(in[1].Metadata) != 0 {
			t.Fatal("Write changed the caller's message")
		}
		return func() {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	sub := b.Subscriber(warren.SubscriberConfig{Marshaler: m})
	got, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Write(ctx, outbox.Pgx(tx), "orders", message.NewMessage("rolled-back", big)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := chunks(); n != 0 {
		t.Fatalf("%d blob chunks after a rollback", n)
	}

	commit := write()
	if n := chunks(); n != 0 {
		t.Fatalf("%d blob chunks visible before the commit", n)
	}
	commit()
	if n := chunks(); n != 4 {
		t.Fatalf("%d blob chunks after the commit, want 4 (3 MiB sealed, in 1 MiB chunks)", n)
	}
	var rowBytes int
	var meta string
	if err := pool.QueryRow(ctx, "SELECT octet_length(payload), metadata::text FROM warren_outbox WHERE uuid = 'big'").Scan(&rowBytes, &meta); err != nil {
		t.Fatal(err)
	}
	if rowBytes != 0 {
		t.Fatalf("the big row holds %d bytes, want only the reference", rowBytes)
	}
	if err := pool.QueryRow(ctx, "SELECT octet_length(payload) FROM warren_outbox WHERE uuid = 'small'").Scan(&rowBytes); err != nil || rowBytes >= len(small) {
		t.Fatalf("the small row holds %d bytes of %d (%v), want it compressed and sealed", rowBytes, len(small), err)
	}
	t.Logf("the big row's metadata: %s", meta)

	pub := b.Publisher(warren.PublisherConfig{Marshaler: m})
	runRelay(t, outbox.RelayConfig{Pool: pool, Publisher: pub, PollInterval: 50 * time.Millisecond})
	for _, want := range []struct {
		uuid string
		body []byte
	}{{"small", small}, {"big", big}} {
		select {
		case msg := <-got:
			if msg.UUID != want.uuid || !bytes.Equal(msg.Payload, want.body) {
				t.Fatalf("consumed %s (%d bytes), want %s (%d bytes)", msg.UUID, len(msg.Payload), want.uuid, len(want.body))
			}
			if msg.Metadata.Get(payload.HeaderClaimCheck) != "" || msg.Metadata.Get(warren.MetaContentEncoding) != "" {
				t.Fatalf("the handler sees the steps: %v", msg.Metadata)
			}
			msg.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never arrived", want.uuid)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for chunks() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d blob chunks left after the ack", chunks())
		}
		time.Sleep(20 * time.Millisecond) // polling the table, with a deadline
	}
}
