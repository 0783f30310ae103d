package zstd_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/payload/zstd"
)

// zstd sends with content-encoding zstd and decodes it; a consumer without
// the codec refuses the message as a permanent ErrUnknownEncoding.
func TestZstdRoundTrip(t *testing.T) {
	codec, err := zstd.New(zstd.SpeedDefault)
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.NewMarshaler(payload.Config{Compression: &payload.Compression{Codec: codec}})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte(`{"sku":"A-1","qty":3},`), 5000)
	pub, err := m.Marshal("t", message.NewMessage("z", body))
	if err != nil {
		t.Fatal(err)
	}
	if pub.ContentEncoding != "zstd" || len(pub.Body) >= len(body)/10 {
		t.Fatalf("content-encoding %q, %d of %d bytes", pub.ContentEncoding, len(pub.Body), len(body))
	}
	d := &amqp.Delivery{Body: pub.Body, ContentEncoding: pub.ContentEncoding, Headers: pub.Headers, MessageId: pub.MessageId}
	got, err := m.Unmarshal(d)
	if err != nil || !bytes.Equal(got.Payload, body) {
		t.Fatalf("decode: %v", err)
	}
	reader, _ := payload.NewMarshaler(payload.Config{Codecs: []payload.Codec{codec}})
	if got, err := reader.Unmarshal(d); err != nil || !bytes.Equal(got.Payload, body) {
		t.Fatalf("a consumer with the codec in Codecs: %v", err)
	}
	plain, _ := payload.NewMarshaler(payload.Config{})
	if _, err := plain.Unmarshal(d); !errors.Is(err, payload.ErrUnknownEncoding) {
		t.Fatalf("a consumer without zstd: %v", err)
	}
	if _, err := codec.Decompress(pub.Body, 10); err == nil {
		t.Fatal("a body past the limit decompressed")
	}
}
