package blobstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/pg/blobstore"
	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// A 5 MiB body goes in as chunks and comes back whole through a payload
// claim check; a blob written before the retention is cleaned up, and its
// message is then a permanent ErrBlobNotFound.
func TestClaimCheckInPostgreSQL(t *testing.T) {
	pool := pgtest.Pool(t, pgtest.Database(t))
	ctx := context.Background()
	s, err := blobstore.New(pool, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := payload.NewMarshaler(payload.Config{ClaimCheck: &payload.ClaimCheck{Store: s}})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 5<<20+123)
	_, _ = rand.Read(body)
	pub, err := m.Marshal("t", message.NewMessage("big", body))
	if err != nil {
		t.Fatal(err)
	}
	var chunks int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM warren_blobs").Scan(&chunks); err != nil || chunks != 6 {
		t.Fatalf("%d chunks (%v), want 6 of at most 1 MiB", chunks, err)
	}
	d := &amqp.Delivery{Headers: pub.Headers, Body: pub.Body, MessageId: pub.MessageId}
	got, err := m.Unmarshal(d)
	if err != nil || !bytes.Equal(got.Payload, body) {
		t.Fatalf("unmarshal: %v, %d bytes", err, len(got.Payload))
	}
	r, err := s.Get(ctx, pub.Headers[payload.HeaderClaimCheck].(string))
	if err != nil {
		t.Fatal(err)
	}
	streamed, _ := io.ReadAll(r)
	if !bytes.Equal(streamed, body) {
		t.Fatal("the streamed blob differs")
	}
	if n, err := s.Cleanup(ctx, time.Now().Add(time.Hour)); err != nil || n != 6 {
		t.Fatalf("cleanup: %d rows, %v", n, err)
	}
	if _, err := m.Unmarshal(d); !errors.Is(err, payload.ErrBlobNotFound) {
		t.Fatalf("after cleanup: %v", err)
	}
	if _, err := blobstore.New(nil, ""); err == nil {
		t.Fatal("a nil pool accepted")
	}
	if _, err := blobstore.New(pool, "Bad Table"); err == nil {
		t.Fatal("a bad table accepted")
	}
}
