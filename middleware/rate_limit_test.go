package middleware_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
)

// 8 handlers in parallel, limited to 10 a second: on the bubble's clock the
// handler starts exactly 10 a second, evenly spaced, after a burst of 3.
func TestRateLimitSpacesTheHandlers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw, err := middleware.RateLimit(middleware.RateLimitConfig{PerSecond: 10, Burst: 3})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var mu sync.Mutex
		var starts []time.Duration
		h := mw(func(*message.Message) ([]*message.Message, error) {
			mu.Lock()
			starts = append(starts, time.Since(start))
			mu.Unlock()
			return nil, nil
		})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 4 {
					_, _ = h(message.NewMessage("m", nil))
				}
			})
		}
		wg.Wait()
		if len(starts) != 32 {
			t.Fatalf("%d starts", len(starts))
		}
		// 3 at once, then one every 100ms: the 32nd at 2.9s.
		if last := starts[len(starts)-1]; last != 2900*time.Millisecond {
			t.Fatalf("the 32nd started at %v, want 2.9s", last)
		}
		for i := 3; i < len(starts); i++ {
			if starts[i]-starts[i-1] != 100*time.Millisecond {
				t.Fatalf("start %d %v after the one before, want 100ms", i, starts[i]-starts[i-1])
			}
		}
	})
}

// A message whose context ends before its turn goes back to the queue, and
// its turn is not lost for the next.
func TestRateLimitGivesBackWhatCannotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mw, _ := middleware.RateLimit(middleware.RateLimitConfig{PerSecond: 1})
		h := mw(func(*message.Message) ([]*message.Message, error) { return nil, nil })
		if _, err := h(message.NewMessage("first", nil)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		m := message.NewMessage("impatient", nil)
		m.SetContext(ctx)
		if _, err := h(m); ack.KindOf(err) != ack.RequeueKind {
			t.Fatalf("a message that could not wait: %v, want requeue", err)
		}
		start := time.Now()
		if _, err := h(message.NewMessage("next", nil)); err != nil || time.Since(start) != 900*time.Millisecond {
			t.Fatalf("the next waited %v (%v), want the 900ms left of the first's second", time.Since(start), err)
		}
	})
	for _, cfg := range []middleware.RateLimitConfig{{}, {PerSecond: -1}, {PerSecond: 1, Burst: -1}} {
		if _, err := middleware.RateLimit(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
