package warrentest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/middleware"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
)

// fatalT records Fatalf instead of failing the real test.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestWaitThatFailsSaysWhatHappened: a wait that reaches its deadline
// names what did happen to the message instead; one that is satisfied
// returns as soon as the event arrives.
func TestWaitThatFailsSaysWhatHappened(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := NewRecorder()
		route := rec.Route(router.Route{Name: "orders", Queue: topology.QueueSpec{Name: "q"}, Handler: func(*message.Message) error { return errors.New("db down") }})
		h := route.Middleware[len(route.Middleware)-1](func(m *message.Message) ([]*message.Message, error) { return nil, route.Handler(m) })
		_, _ = h(message.NewMessage("m-1", nil))
		route.DelayedRetry.OnRetry(middleware.DelayedRetryEvent{Msg: message.NewMessage("m-1", nil), Err: errors.New("db down"), Queue: "q"})

		ft := &fatalT{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			rec.WaitConsumed(ft, "m-1", 10*time.Second)
		}()
		<-done
		for _, want := range []string{`"m-1" was not consumed within 10s`, "attempted attempt 1: db down", "retried to q: db down"} {
			if !strings.Contains(ft.msg, want) {
				t.Errorf("failure message %q lacks %q", ft.msg, want)
			}
		}

		ft = &fatalT{TB: t}
		done = make(chan struct{})
		go func() {
			defer close(done)
			rec.WaitConsumed(ft, "m-2", time.Second)
		}()
		<-done
		if !strings.Contains(ft.msg, "the routes saw 1 others: m-1") {
			t.Errorf("failure message %q does not name the messages that were seen", ft.msg)
		}

		// Satisfied waits return at the event, not at the deadline.
		start := time.Now()
		go func() {
			time.Sleep(2 * time.Second)
			_, _ = route.Middleware[len(route.Middleware)-1](func(*message.Message) ([]*message.Message, error) { return nil, nil })(message.NewMessage("m-1", nil))
		}()
		ev := rec.WaitConsumed(t, "m-1", time.Minute)
		if waited := time.Since(start); waited != 2*time.Second || ev.Kind != Consumed {
			t.Fatalf("wait returned after %v with %v, want at the event (2s)", waited, ev)
		}
	})
}
