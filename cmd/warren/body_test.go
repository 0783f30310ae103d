package main

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

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
