package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
)

// TestBlockedBroker: a memory alarm on a disposable node. Publishes wait,
// then fail with ErrBlocked at their deadline; nothing hangs; publishing
// resumes when the alarm clears.
func TestBlockedBroker(t *testing.T) {
	n := node.Get(t)
	c := openConn(t, n.URL())
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const topic = "blocked.jobs"
	if err := pub.Publish(topic, message.NewMessage("warm-up", nil)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.RaiseMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.ClearMemoryAlarm(context.Background())
	// The broker blocks a connection when it next publishes.
	_ = pub.Publish(topic, message.NewMessage("trigger", nil))
	for !c.Blocked() {
		if ctx.Err() != nil {
			t.Fatal("never blocked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	const callers = 10
	var wg sync.WaitGroup
	errs := make([]error, callers)
	durations := make([]time.Duration, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = pub.Publish(topic, message.NewMessage(fmt.Sprint("blocked-", i), nil))
			durations[i] = time.Since(start)
		}()
	}
	wg.Wait()
	var longest time.Duration
	for i, err := range errs {
		if !errors.Is(err, conn.ErrBlocked) {
			t.Fatalf("publish %d while blocked: %v, want ErrBlocked", i, err)
		}
		longest = max(longest, durations[i])
	}
	if longest > 5*time.Second {
		t.Fatalf("a blocked publish took %v with a 2s timeout", longest)
	}
	if err := n.ClearMemoryAlarm(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		err := pub.Publish(topic, message.NewMessage("after", nil))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publishing never resumed: %v", err)
		}
	}
	fmt.Printf("blocked: %d publishes during a memory alarm each failed with ErrBlocked within %v (timeout 2s); publishing resumed %v after the alarm cleared\n",
		callers, longest.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
