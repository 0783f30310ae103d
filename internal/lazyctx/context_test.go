package lazyctx

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warrenmq/warren/internal/valuesonly"
)

type key struct{}

// parentOfAMessage is what a message's context derives from: a
// subscription's values, whose own context (Subscribe's) may be cancelled
// with a cause of its own.
func parentOfAMessage(t *testing.T) (context.Context, context.CancelCauseFunc) {
	t.Helper()
	subscribe, cancel := context.WithCancelCause(context.WithValue(context.Background(), key{}, "v"))
	t.Cleanup(func() { cancel(nil) })
	return valuesonly.From(subscribe), cancel
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestCancelEndsItWithCanceledWhetherOrNotDoneWasAskedFor(t *testing.T) {
	for _, askFirst := range []bool{false, true} {
		parent, _ := parentOfAMessage(t)
		c := New(parent, time.Minute)
		if got := c.Value(key{}); got != "v" {
			t.Fatalf("Value = %v, want the parent's", got)
		}
		if askFirst && isClosed(c.Done()) {
			t.Fatal("Done closed before the end")
		}
		if c.Err() != nil {
			t.Fatalf("Err = %v before the end", c.Err())
		}
		c.Cancel()
		c.Cancel() // idempotent
		if !isClosed(c.Done()) {
			t.Fatal("Done open after Cancel")
		}
		if !errors.Is(c.Err(), context.Canceled) || !errors.Is(context.Cause(c), context.Canceled) {
			t.Fatalf("Err %v, Cause %v; want context.Canceled", c.Err(), context.Cause(c))
		}
		if c.timer != nil && c.timer.Stop() {
			t.Fatal("the deadline's timer still armed after Cancel")
		}
	}
}

// The parent's own cancellation, with its cause, is not the message's:
// context.Cause of the message's context reports the message's end.
func TestCauseIsItsOwnNotItsParents(t *testing.T) {
	parent, cancelSubscribe := parentOfAMessage(t)
	c := New(parent, 0)
	cancelSubscribe(errors.New("Subscribe's ctx ended"))
	if c.Err() != nil || isClosed(c.Done()) {
		t.Fatal("ended with a values-only parent's context")
	}
	c.Cancel()
	if got := context.Cause(c); !errors.Is(got, context.Canceled) {
		t.Fatalf("Cause = %v, want context.Canceled (its own)", got)
	}
	if causeKey == nil {
		t.Fatal("the key context.Cause looks up was not found")
	}
}

// Past its deadline Err is DeadlineExceeded and Done closed, although
// nobody asked for Done before (no timer was ever armed).
func TestDeadlinePassesWithoutATimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, _ := parentOfAMessage(t)
		c := New(parent, time.Second)
		dl, ok := c.Deadline()
		if !ok || !dl.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("Deadline = %v %v, want a second from now", dl, ok)
		}
		time.Sleep(time.Second) // the bubble's clock
		if c.timer != nil {
			t.Fatal("a timer was armed without Done")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), context.DeadlineExceeded) {
			t.Fatalf("Err %v, Cause %v; want context.DeadlineExceeded", c.Err(), context.Cause(c))
		}
		if !isClosed(c.Done()) {
			t.Fatal("Done open past the deadline")
		}
		c.Cancel()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v after a late Cancel, want it unchanged", c.Err())
		}
	})
}

// A handler waiting on Done is woken at the deadline.
func TestDoneClosesAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, _ := parentOfAMessage(t)
		start := time.Now()
		c := New(parent, time.Second)
		<-c.Done()
		if waited := time.Since(start); waited != time.Second {
			t.Fatalf("Done closed after %v, want 1s", waited)
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err = %v, want context.DeadlineExceeded", c.Err())
		}
	})
}

// Contexts derived from it end with it, through AfterFunc (the context
// package starts a goroutine per child for a parent without it), and keep
// the earlier deadline.
func TestDerivedContextsEndWithItThroughAfterFunc(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, _ := parentOfAMessage(t)
		c := New(parent, time.Second)
		child, cancelChild := context.WithTimeout(c, time.Hour)
		defer cancelChild()
		if dl, _ := child.Deadline(); !dl.Equal(time.Now().Add(time.Second)) {
			t.Fatalf("child's deadline %v, want the message's", dl)
		}
		c.mu.Lock()
		registered := c.registered()
		c.mu.Unlock()
		if registered != 1 {
			t.Fatalf("%d functions registered with AfterFunc, want the child's 1", registered)
		}
		canceled, cancelCanceled := context.WithCancel(c)
		cancelCanceled() // a child cancelled first lets go of its registration
		c.mu.Lock()
		registered = c.registered()
		c.mu.Unlock()
		if registered != 1 || canceled.Err() == nil {
			t.Fatalf("%d registered after a child's own cancel, want 1", registered)
		}
		<-child.Done()
		if !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Fatalf("child's Err = %v, want context.DeadlineExceeded", child.Err())
		}
		other := context.WithValue(c, key{}, "w")
		if other.Err() == nil || other.Value(key{}) != "w" {
			t.Fatal("a value child of an ended context")
		}
	})
}

func TestAfterFuncRunsOnceUnlessStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, _ := parentOfAMessage(t)
		c := New(parent, 0)
		ran := make(chan string, 3)
		stop := c.AfterFunc(func() { ran <- "stopped one" })
		c.AfterFunc(func() { ran <- "kept one" })
		if !stop() || stop() {
			t.Fatal("stop before the end: want true once, then false")
		}
		c.Cancel()
		synctest.Wait()
		late := c.AfterFunc(func() { ran <- "late one" })
		synctest.Wait()
		if late() {
			t.Fatal("stop of a function already run reported true")
		}
		close(ran)
		var got []string
		for s := range ran {
			got = append(got, s)
		}
		if len(got) != 2 || got[0] != "kept one" || got[1] != "late one" {
			t.Fatalf("ran %v, want the kept one and the late one", got)
		}
	})
}

// A parent that can end (not what a message's is) ends it too, with the
// parent's error.
func TestACancellableParentEndsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := New(parent, time.Hour)
		if dl, _ := c.Deadline(); !dl.Equal(time.Now().Add(time.Minute)) {
			t.Fatalf("Deadline %v, want the parent's earlier one", dl)
		}
		cancel()
		<-c.Done()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err = %v, want the parent's context.Canceled", c.Err())
		}
		ended, cancelEnded := context.WithCancel(context.Background())
		cancelEnded()
		if c := New(ended, 0); !errors.Is(c.Err(), context.Canceled) || !isClosed(c.Done()) {
			t.Fatal("a context of an ended parent did not start ended")
		}
	})
}

// registered counts the functions AfterFunc holds (under mu).
func (c *Context) registered() int {
	n := 0
	for a := c.afters; a != nil; a = a.next {
		n++
	}
	return n
}
