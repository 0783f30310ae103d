package lazyctx

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// naiveContext is a context type of one's own as one would first write it:
// its own end, the parent's values, and nothing else.
type naiveContext struct {
	parent context.Context
	once   sync.Once
	done   chan struct{}
}

func newNaive(parent context.Context) *naiveContext {
	return &naiveContext{parent: parent, done: make(chan struct{})}
}

func (c *naiveContext) cancel()                     { c.once.Do(func() { close(c.done) }) }
func (c *naiveContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *naiveContext) Done() <-chan struct{}       { return c.done }
func (c *naiveContext) Value(key any) any           { return c.parent.Value(key) }
func (c *naiveContext) String() string              { return "naive" }
func (c *naiveContext) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// TestPitfallAContextOfOnesOwnCostsAGoroutinePerChildAndLendsItsParentsCause
// shows PITFALLS 55 on the naive type, then that a message's context has
// neither trap.
func TestPitfallAContextOfOnesOwnCostsAGoroutinePerChildAndLendsItsParentsCause(t *testing.T) {
	subscribe, cancelSubscribe := context.WithCancelCause(context.Background())
	defer cancelSubscribe(nil)

	// Every context derived from it is watched by a goroutine of the
	// context package's, until the child or the parent ends.
	naive := newNaive(subscribe)
	before := contextWatchers()
	_, cancelChild := context.WithCancel(naive)
	if got := contextWatchers() - before; got != 1 {
		t.Fatalf("deriving from the naive context started %d watchers; the pitfall is one", got)
	}
	cancelChild()

	// Its parent's cancellation, found through Value, is taken for its own.
	cancelSubscribe(errors.New("Subscribe's ctx ended"))
	naive.cancel()
	if got := context.Cause(naive); errors.Is(got, context.Canceled) {
		t.Fatalf("Cause of the naive context = %v; the pitfall is the parent's cause", got)
	}

	// The naive child's watcher ends once it sees the child cancelled:
	// wait for that, so that it does not end during the count below.
	for deadline := time.Now().Add(10 * time.Second); contextWatchers() != before; {
		if time.Now().After(deadline) {
			t.Fatal("the naive child's watcher did not end")
		}
		runtime.Gosched()
	}

	// A message's context: no goroutine per child, and its own cause.
	subscribe2, cancelSubscribe2 := context.WithCancelCause(context.Background())
	defer cancelSubscribe2(nil)
	msg := New(valuesOnly{subscribe2}, time.Minute)
	before = contextWatchers()
	child, cancelChild2 := context.WithCancel(msg)
	defer cancelChild2()
	if got := contextWatchers() - before; got != 0 {
		t.Fatalf("deriving from a message's context started %d watchers, want 0", got)
	}
	cancelSubscribe2(errors.New("Subscribe's ctx ended"))
	msg.Cancel()
	<-child.Done()
	if got := context.Cause(msg); !errors.Is(got, context.Canceled) {
		t.Fatalf("Cause of a message's context = %v, want its own context.Canceled", got)
	}
}

// contextWatchers counts the context package's goroutines that watch a
// parent it cannot hook into, by their stacks: counting every goroutine
// instead read a watcher of the first half ending during the second.
func contextWatchers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "created by context.(*cancelCtx).propagateCancel")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// valuesOnly is the parent a message's context has: values, no end (as
// internal/valuesonly, which passes Cause's lookup through too).
type valuesOnly struct{ context.Context }

func (valuesOnly) Deadline() (time.Time, bool) { return time.Time{}, false }
func (valuesOnly) Done() <-chan struct{}       { return nil }
func (valuesOnly) Err() error                  { return nil }
