package warren_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
)

// handlerSaw is what a handler saw of its message's context.
type handlerSaw struct {
	body                string
	err, cause, derived error
	deadline            time.Time
	hasDeadline         bool
	started, ended      time.Time
}

// TestHandlerContextEndsAtHandlerTimeout: a message's context ends at
// HandlerTimeout with context.DeadlineExceeded (its own cause, and a context
// derived from it ends with it), both for a handler that waits on Done and
// for one that only polls Err, which arms no timer (internal/lazyctx).
func TestHandlerContextEndsAtHandlerTimeout(t *testing.T) {
	b := rabbittest.Shared(t)
	c := openConn(t, b.URL)
	m := warren.QueuePerTopic{Prefix: b.Prefix}
	const topic = "handler-timeout"
	const timeout = 300 * time.Millisecond
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m, MaxInFlight: 2, HandlerTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	saw := make(chan handlerSaw, 2)
	err = sub.SubscribeFunc(ctxT(t, 30*time.Second), topic, func(msg *message.Message) error {
		ctx := msg.Context()
		s := handlerSaw{body: string(msg.Payload), started: time.Now()}
		s.deadline, s.hasDeadline = ctx.Deadline()
		switch s.body {
		case "waits":
			<-ctx.Done()
		case "polls":
			for ctx.Err() == nil {
				runtime.Gosched()
			}
		}
		s.ended = time.Now()
		s.err, s.cause = ctx.Err(), context.Cause(ctx)
		// Derived only now: deriving asks for Done, which arms the timer
		// the polling handler must do without.
		derived, cancel := context.WithCancel(ctx)
		defer cancel()
		<-derived.Done()
		s.derived = derived.Err()
		saw <- s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, message.NewMessage("1", []byte("waits")), message.NewMessage("2", []byte("polls"))); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var s handlerSaw
		select {
		case s = <-saw:
		case <-time.After(20 * time.Second):
			t.Fatal("a handler's context never ended")
		}
		what := fmt.Sprintf("the handler that %s", s.body)
		if !s.hasDeadline || s.deadline.After(s.started.Add(timeout)) || s.deadline.Before(s.started.Add(-10*time.Second)) {
			t.Errorf("%s: deadline %v (set %v), handler started %v; want at most HandlerTimeout after", what, s.deadline, s.hasDeadline, s.started)
		}
		if s.ended.Before(s.deadline) {
			t.Errorf("%s: its context ended at %v, before its deadline %v", what, s.ended, s.deadline)
		}
		if !errors.Is(s.err, context.DeadlineExceeded) || !errors.Is(s.cause, context.DeadlineExceeded) || !errors.Is(s.derived, context.DeadlineExceeded) {
			t.Errorf("%s: Err %v, Cause %v, a derived context's Err %v; want context.DeadlineExceeded each", what, s.err, s.cause, s.derived)
		}
	}
}
