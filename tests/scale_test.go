package tests

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// TestConsumersBeyondChannelMax: more consumers on one connection than it
// has channels (channel_max 2047; a channel per consumer stopped at 2,046,
// PITFALLS 27). They share channels, all consume, and all come back after
// a reconnect in one restore run. make bench runs 10,000.
func TestConsumersBeyondChannelMax(t *testing.T) {
	t.Parallel()
	const n = 3000
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c := openConn(t, p.URL(b.Vhost))
	// The connection's changes, printed if the test fails: a restore that
	// ends in "context canceled" lost its connection, and the change says
	// why (PITFALLS 69).
	var statesMu sync.Mutex
	var states []string
	c.OnStateChange(func(ch conn.StateChange) {
		statesMu.Lock()
		states = append(states, time.Now().Format("15:04:05.000")+" "+ch.String())
		statesMu.Unlock()
	})
	t.Cleanup(func() {
		if t.Failed() {
			statesMu.Lock()
			defer statesMu.Unlock()
			t.Logf("connection changes: %q", states)
		}
	})
	ops, err := broker.NewOps(c, broker.OpsConfig{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ops.Close(context.Background()) })
	var got atomic.Int32
	top := topology.Topology{}
	var consumers []broker.ConsumerSpec
	for i := 0; i < n; i++ {
		q := b.Prefix + "many." + strconv.Itoa(i)
		top.Queues = append(top.Queues, topology.QueueSpec{Name: q, Exclusive: true})
		consumers = append(consumers, broker.ConsumerSpec{Queue: q, AutoAck: true, Handler: func(context.Context, *broker.Delivery) { got.Add(1) }})
	}
	ctx := ctxT(t, 3*time.Minute)
	start := time.Now()
	if err := ops.Apply(ctx, top); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.ConsumeAll(ctx, consumers); err != nil {
		t.Fatal(err)
	}
	declared := time.Since(start)
	channels := ops.Registry().ConsumerChannels()
	if channels >= 2047 || channels < n/64 {
		t.Fatalf("%d consumers on %d channels", n, channels)
	}
	publishAll := func(round string) {
		t.Helper()
		got.Store(0)
		msgs := make([]broker.Outgoing, n)
		for i := range msgs {
			msgs[i] = broker.Outgoing{RoutingKey: top.Queues[i].Name, Mandatory: true, Msg: amqp.Publishing{Body: []byte(round)}}
		}
		for i, err := range ops.PublishAll(ctx, msgs) {
			if err != nil {
				t.Fatalf("%s: publish to consumer %d: %v", round, i, err)
			}
		}
		rabbittest.Eventually(t, 60*time.Second, round+": every consumer's message", func() bool { return got.Load() >= n },
			func() string { return fmt.Sprintf("%d of %d consumers received", got.Load(), n) })
	}
	publishAll("first")
	reports := make(chan broker.RestoreReport, 1)
	ops.Registry().OnRestored(func(r broker.RestoreReport) { reports <- r })
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	rep := <-reports
	if !rep.OK() || len(rep.Restored) != 2*n {
		t.Fatalf("restore: %d restored, failures %v, err %v", len(rep.Restored), rep.Failed, rep.Err)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	publishAll("after the reconnect")
	t.Logf("%d consumers on one connection, %d channels: declared and consuming in %v, restored in %v", n, channels, declared.Round(time.Millisecond), rep.Duration.Round(time.Millisecond))
}
