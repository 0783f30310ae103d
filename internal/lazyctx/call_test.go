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
