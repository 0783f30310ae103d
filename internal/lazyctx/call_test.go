package lazyctx

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// A call's context ends at its deadline with nobody asking for Done: Err
// says so, Until's ring closes, and no timer of its own was made.
func TestACallEndsAtItsDeadlineWithoutATimerOfItsOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		c := Bound(context.Background(), time.Second, &a)
		defer c.Cancel()
		if dl, ok := c.Deadline(); !ok || !dl.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("Deadline = %v %v", dl, ok)
		}
		done, ring := Until(c)
		if done != nil || ring == nil {
			t.Fatalf("Until of a call from context.Background: done %v, ring %v; want nil and a ring", done, ring)
		}
		if c.Err() != nil {
			t.Fatal("ended before its deadline")
		}
		<-ring
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err at the deadline = %v", c.Err())
		}
		c.mu.Lock()
		timer := c.timer
		c.mu.Unlock()
		if timer != nil || c.armed.Load() != nil {
			t.Fatal("the call armed a timer of its own")
		}
	})
}

// Until of a call whose parent can end gives the parent's Done: the
// parent's cancellation ends the wait and the call, and the call
// registered nothing with its parent (the first Done would).
func TestACallEndsWithItsParent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		parent, cancel := context.WithCancel(context.Background())
		c := Bound(parent, time.Hour, &a)
		defer c.Cancel()
		done, _ := Until(c)
		if done != parent.Done() {
			t.Fatal("Until's done is not the parent's Done")
		}
		c.mu.Lock()
		hooked := c.unhook != nil
		c.mu.Unlock()
		if hooked {
			t.Fatal("a call nobody asked Done of watches its parent")
		}
		cancel()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err after the parent's cancel = %v", c.Err())
		}
		if !isClosed(c.Done()) {
			t.Fatal("Done of an ended call is open")
		}
	})
}

// Once somebody asked for Done (a slow path: the wait for a blocked
// connection, a declare), Until gives Done itself, which its timer closes.
func TestUntilAfterDoneWaitsOnDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		c := Bound(context.Background(), time.Second, &a)
		defer c.Cancel()
		d := c.Done()
		done, ring := Until(c)
		if done != d || ring != nil {
			t.Fatal("Until of an armed call is not its Done")
		}
		<-done
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v", c.Err())
		}
	})
}

// A context that is not a call's is waited on through its own Done.
func TestUntilOfAnotherContextIsItsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if done, ring := Until(ctx); done != ctx.Done() || ring != nil {
		t.Fatal("Until of a standard context")
	}
	m := New(context.Background(), time.Hour) // a message's: no alarm
	defer m.Cancel()
	if done, ring := Until(m); done != m.Done() || ring != nil {
		t.Fatal("Until of a message's context")
	}
}

// A call that ends in time costs one allocation (context.WithTimeout and a
// wait on its Done: five, and a timer).
func TestACallThatEndsInTimeAllocatesOnce(t *testing.T) {
	var a Alarm
	defer a.Stop()
	allocs := testing.AllocsPerRun(1000, func() {
		c := Bound(context.Background(), time.Minute, &a)
		_ = c.Err()
		_, _ = Until(c)
		c.Cancel()
	})
	if allocs != 1 {
		t.Fatalf("%v allocations a call, want 1", allocs)
	}
}

// A call made with a consumed message's context (a handler's publish)
// waits on the message's end without arming its timer: the message's
// cancellation ends the wait, and the call's ring, at or before the
// message's deadline, covers that deadline.
func TestACallOnAMessageLeavesTheMessageUnarmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		msg := New(context.Background(), time.Minute)
		defer msg.Cancel()
		c := Bound(msg, time.Hour, &a)
		defer c.Cancel()
		if dl, _ := c.Deadline(); !dl.Equal(time.Now().Add(time.Minute)) {
			t.Fatalf("the call's deadline %v is not the message's", dl)
		}
		done, ring := Until(c)
		if done == nil || ring == nil {
			t.Fatalf("Until: done %v, ring %v; want both", done, ring)
		}
		if msg.Armed() || c.Armed() {
			t.Fatal("Until armed the message's timer or the call's")
		}
		<-ring
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(msg.Err(), context.DeadlineExceeded) {
			t.Fatalf("at the message's deadline: call %v, message %v", c.Err(), msg.Err())
		}

		msg2 := New(context.Background(), time.Minute)
		c2 := Bound(msg2, time.Second, &a)
		defer c2.Cancel()
		done, _ = Until(c2)
		msg2.Cancel()
		<-done
		if !errors.Is(c2.Err(), context.Canceled) {
			t.Fatalf("the call after its message's cancel: %v", c2.Err())
		}

		// A call's slow path asks its Done (a route's first declare):
		// the call's timer, and the message watched unarmed.
		msg3 := New(context.Background(), time.Minute)
		c3 := Bound(msg3, time.Hour, &a)
		defer c3.Cancel()
		d := c3.Done()
		if !c3.Armed() || msg3.Armed() {
			t.Fatalf("after the call's Done: call armed %v, message armed %v; want true, false", c3.Armed(), msg3.Armed())
		}
		msg3.Cancel()
		<-d
		if !errors.Is(c3.Err(), context.Canceled) {
			t.Fatalf("the armed call after its message's cancel: %v", c3.Err())
		}
	})
}

// Also waits on a second context that bounds a call (a published message's
// own) without arming it: its deadline rings when it comes before the
// call's, its cancellation closes done.
func TestAlsoWaitsOnAMessageUnarmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		c := Bound(context.Background(), time.Minute, &a)
		defer c.Cancel()
		start := time.Now()

		early := New(context.Background(), time.Second)
		defer early.Cancel()
		done, ring := Also(c, early)
		if done == nil || ring == nil || early.Armed() {
			t.Fatalf("Also of an earlier message: done %v, ring %v, armed %v", done, ring, early.Armed())
		}
		<-ring
		if got := time.Since(start); got != time.Second {
			t.Fatalf("rang after %v, want the message's deadline, 1s", got)
		}
		if !errors.Is(early.Err(), context.DeadlineExceeded) || c.Err() != nil {
			t.Fatalf("at the message's deadline: message %v, call %v", early.Err(), c.Err())
		}

		late := New(context.Background(), time.Hour)
		done, ring = Also(c, late)
		if done == nil || ring != nil || late.Armed() {
			t.Fatalf("Also of a later message: done %v, ring %v (the call's own rings first), armed %v", done, ring, late.Armed())
		}
		late.Cancel()
		<-done

		if done, ring := Also(c, c); done != nil || ring != nil {
			t.Fatal("Also of the call itself is not nil, nil")
		}
		if done, ring := Also(c, nil); done != nil || ring != nil {
			t.Fatal("Also of no context is not nil, nil")
		}
		std, cancel := context.WithCancel(context.Background())
		defer cancel()
		if done, ring := Also(c, std); done != std.Done() || ring != nil {
			t.Fatal("Also of a standard context is not its Done")
		}
	})
}

// A message asked for Done after a call waited on it unarmed gets its
// timer then, and ends at its deadline for everybody.
func TestDoneAfterAnUnarmedWaitArms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		msg := New(context.Background(), time.Second)
		defer msg.Cancel()
		c := Bound(context.Background(), time.Minute, &a)
		defer c.Cancel()
		own, _ := Also(c, msg)
		d := msg.Done()
		if !msg.Armed() || d != own {
			t.Fatal("Done after Also: not armed, or another channel")
		}
		<-own
		if !errors.Is(msg.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v", msg.Err())
		}

		// Past its deadline unnoticed (nobody asked Err; the ring woke
		// the wait), its first Done is closed at once.
		late := New(context.Background(), time.Second)
		defer late.Cancel()
		dl, _ := late.Deadline()
		for time.Now().Before(dl) { // a ring may come early: wait again
			_, ring := Also(c, late)
			<-ring
		}
		if !isClosed(late.Done()) {
			t.Fatal("Done of a context past its deadline, waited on unarmed before, is open")
		}
	})
}
