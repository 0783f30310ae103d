package ack_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
)

func withInfo(info ack.Info) *message.Message {
	m := message.NewMessage("id", nil)
	m.SetContext(ack.NewContext(context.Background(), info))
	return m
}

func TestAttemptPrecedence(t *testing.T) {
	death := []any{
		amqp.Table{"queue": "delay.1s", "reason": "expired", "count": int64(7)},
		amqp.Table{"queue": "work", "reason": "rejected", "count": int64(2)},
		amqp.Table{"queue": "other", "reason": "rejected", "count": int64(9)},
	}
	tests := []struct {
		name string
		info ack.Info
		want int
	}{
		{"first delivery", ack.Info{Queue: "work"}, 1},
		{"redelivered only", ack.Info{Queue: "work", Redelivered: true}, 2},
		{"x-death of this queue, not element 0 nor a sum", ack.Info{Queue: "work", Headers: map[string]any{"x-death": death}}, 3},
		{"x-death of another queue only", ack.Info{Queue: "nowhere", Headers: map[string]any{"x-death": death}}, 1},
		{"x-delivery-count beats x-death", ack.Info{Queue: "work", Headers: map[string]any{"x-death": death, "x-delivery-count": int64(4)}}, 5},
		{"x-acquired-count beats x-delivery-count", ack.Info{Queue: "work", Headers: map[string]any{"x-acquired-count": int32(6), "x-delivery-count": int64(4)}}, 7},
		{"warren header beats everything", ack.Info{Queue: "work", Redelivered: true, Headers: map[string]any{ack.AttemptHeader: "3", "x-acquired-count": int64(6)}}, 4},
		{"garbage header ignored", ack.Info{Queue: "work", Headers: map[string]any{ack.AttemptHeader: "many"}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ack.Attempt(withInfo(tt.info)); got != tt.want {
				t.Fatalf("Attempt = %d, want %d", got, tt.want)
			}
		})
	}
	plain := message.NewMessage("id", nil)
	if ack.Attempt(plain) != 1 {
		t.Fatal("a message of another Pub/Sub is attempt 1")
	}
	plain.Metadata.Set(ack.AttemptHeader, "2")
	if ack.Attempt(plain) != 3 {
		t.Fatal("warren's attempt metadata ignored without delivery info")
	}
}

func TestDispositions(t *testing.T) {
	m := message.NewMessage("id", nil)
	if ack.Set(m, ack.Reject, nil) {
		t.Fatal("Set on an untracked message reported success")
	}
	ack.Track(m)
	why := errors.New("bad")
	if !ack.Set(m, ack.Reject, why) {
		t.Fatal("Set failed on a tracked message")
	}
	// The slot is shared by copies of the context.
	m2 := m.Copy()
	m2.SetContext(m.Context())
	if d, err := ack.Get(m2); d != ack.Reject || err != why {
		t.Fatalf("Get = %v %v", d, err)
	}
	if ack.RejectRequeue.String() != "reject-requeue" || ack.Disposition(42).String() != "disposition(42)" {
		t.Fatal("String")
	}
}

func TestErrorKinds(t *testing.T) {
	base := errors.New("x")
	if ack.Permanent(nil) != nil || ack.AsRequeue(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	p := ack.Permanent(base)
	if !ack.IsPermanent(p) || !errors.Is(p, base) || ack.KindOf(base) != ack.Retryable {
		t.Fatal("Permanent")
	}
	wrapped := errors.Join(errors.New("ctx"), ack.AsRequeue(base))
	if ack.KindOf(wrapped) != ack.RequeueKind {
		t.Fatal("kind lost through wrapping")
	}
}
