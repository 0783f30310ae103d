package ack_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
)

func withInfo(info ack.Info) *message.Message {
	m := message.NewMessage("id", nil)
	m.SetContext(ack.NewContext(context.Background(), info))
	return m
}

// One meaning of attempt: executions of the handler, counting in-process
// retries too.
func TestAttemptCountsExecutions(t *testing.T) {
	m := withInfo(ack.Info{Queue: "work", PreviousAttempts: 2})
	if ack.Attempt(m) != 3 {
		t.Fatalf("Attempt = %d, want 3", ack.Attempt(m))
	}
	if n := ack.NextAttempt(m); n != 4 || ack.Attempt(m) != 4 {
		t.Fatalf("after an in-process retry: %d / %d, want 4", n, ack.Attempt(m))
	}
	// A copy of the context shares the count.
	m2 := m.Copy()
	m2.SetContext(m.Context())
	if ack.Attempt(m2) != 4 {
		t.Fatal("count not shared by the context")
	}
	plain := message.NewMessage("id", nil)
	if ack.Attempt(plain) != 1 {
		t.Fatal("a message of another Pub/Sub is attempt 1")
	}
	plain.Metadata.Set(ack.AttemptHeader, "2")
	if ack.Attempt(plain) != 3 {
		t.Fatal("warren's attempt metadata ignored without delivery info")
	}
	ack.Track(plain)
	if ack.NextAttempt(plain) != 4 {
		t.Fatal("in-process retry not counted on a tracked message")
	}
	if _, ok := ack.InfoOf(plain); ok {
		t.Fatal("a tracked message has no delivery info")
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
	if !(ack.KindOf(p) == ack.PermanentKind) || !errors.Is(p, base) || ack.KindOf(base) != ack.Retryable {
		t.Fatal("Permanent")
	}
	wrapped := errors.Join(errors.New("ctx"), ack.AsRequeue(base))
	if ack.KindOf(wrapped) != ack.RequeueKind {
		t.Fatal("kind lost through wrapping")
	}
}
