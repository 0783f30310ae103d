package ack_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/headers"
)

// TestCopyKeepsMovesDropsAndAdds walks the table of Copy's doc: what a
// copy keeps, moves, drops and adds.
func TestCopyKeepsMovesDropsAndAdds(t *testing.T) {
	msg := message.NewMessage("id-1", []byte("body"))
	msg.SetContext(ack.NewContext(context.Background(), ack.Info{
		Exchange: "shop", RoutingKey: "order.created", Queue: "orders",
		Headers: map[string]any{"count": int32(3), "tags": []any{"a"}, "x-death": []any{map[string]any{"count": int64(1)}}, "note": "text"},
	}))
	for k, v := range map[string]string{
		"count": "3", "tags": `["a"]`, "note": "text", "x-death": `[{"count":1}]`, "x-first-death-queue": "orders",
		"x-delivery-count": "2", "x-tenant": "acme", "traceparent": "00-abc-def-01",
		"amqp.expiration": "60000", "amqp.user_id": "alice", "amqp.content_type": "text/plain", "amqp.delivery_mode": "1",
		"warren-publish-seq": "9",
	} {
		msg.Metadata[k] = v
	}
	out := ack.Copy(msg)
	want := map[string]string{
		// kept
		"count": "3", "tags": `["a"]`, "note": "text", "x-tenant": "acme", "traceparent": "00-abc-def-01",
		"amqp.content_type": "text/plain", "amqp.delivery_mode": "1",
		// moved
		ack.HeaderOriginalExpiration: "60000", ack.HeaderOriginalUserID: "alice", ack.HeaderOriginalDeath: `[{"count":1}]`,
		// added
		ack.HeaderOriginalExchange: "shop", ack.HeaderOriginalRoutingKey: "order.created", ack.HeaderOriginalQueue: "orders",
	}
	if len(out.Metadata) != len(want) {
		t.Errorf("copy has %d metadata entries, want %d: %v", len(out.Metadata), len(want), out.Metadata)
	}
	for k, v := range want {
		if out.Metadata[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, out.Metadata[k], v)
		}
	}
	if out.UUID != "id-1" || string(out.Payload) != "body" {
		t.Errorf("copy %s %q", out.UUID, out.Payload)
	}
	typed := headers.Typed(out.Context())
	if typed["count"] != int32(3) || typed["note"] != nil || typed[ack.HeaderOriginalDeath] == nil {
		t.Errorf("typed headers %#v: want count int32, x-death moved typed, strings left to metadata", typed)
	}

	// A copy of the copy keeps the first origin and the first TTL.
	again := ack.Copy(out)
	if again.Metadata[ack.HeaderOriginalQueue] != "orders" || again.Metadata[ack.HeaderOriginalExpiration] != "60000" {
		t.Errorf("second copy lost the origin: %v", again.Metadata)
	}
	if headers.Typed(message.NewMessage("x", nil).Context()) != nil {
		t.Error("a message that is no copy has typed headers")
	}
}
