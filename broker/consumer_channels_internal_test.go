package broker

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// internalOps is an Ops on its own connection to url, closed when t ends.
func internalOps(t *testing.T, url string) *Ops {
	t.Helper()
	ops, err := NewOps(rabbittest.OpenConn(t, url, conn.Config{}), OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ops.Close(context.Background()) })
	return ops
}

// A channel error on a shared consumer channel costs only the consumers on
// that channel, and they come back by themselves.
func TestChannelErrorCostsOnlyItsConsumers(t *testing.T) {
	b := rabbittest.Shared(t)
	ops := internalOps(t, b.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = consumersPerChannel + 8 // two channels
	var got atomic.Int32
	var consumers []*Consumer
	for i := 0; i < n; i++ {
		q := b.Name("host." + strconv.Itoa(i))
		if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q, AutoDelete: true}); err != nil {
			t.Fatal(err)
		}
		c, err := ops.Consume(ctx, ConsumerSpec{Queue: q, AutoAck: true, Handler: func(context.Context, *Delivery) { got.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		consumers = append(consumers, c)
	}
	if ops.reg.ConsumerChannels() != 2 {
		t.Fatalf("%d consumers on %d channels", n, ops.reg.ConsumerChannels())
	}
	hostOf := func(c *Consumer) *sharedChannel {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur == nil {
			return nil
		}
		return c.cur.channel
	}
	first := hostOf(consumers[0])
	before := make([]*sharedChannel, n)
	hit := 0
	for i, c := range consumers {
		if before[i] = hostOf(c); before[i] == first {
			hit++
		}
	}
	if hit != consumersPerChannel {
		t.Fatalf("%d consumers on the first channel, want %d", hit, consumersPerChannel)
	}
	// The broker closes the first channel (a 404 on it).
	if _, err := first.ch.QueueDeclarePassive(ctx, b.Prefix+"nowhere"); err == nil {
		t.Fatal("passive declare of a missing queue succeeded")
	}
	// Those of the first channel consume again on another; the others never
	// left theirs.
	back := 0
	rabbittest.Eventually(t, 20*time.Second, "the consumers of the closed channel back on another", func() bool {
		back = 0
		for i, c := range consumers {
			h := hostOf(c)
			switch {
			case before[i] != first && h != before[i]:
				t.Fatalf("consumer %d of a healthy channel was moved", i)
			case before[i] == first && h != nil && h != first && c.Consuming():
				back++
			}
		}
		return back == hit
	}, func() string { return fmt.Sprintf("%d of %d came back", back, hit) })
	for i := 0; i < n; i++ {
		if err := ops.Publish(ctx, "", b.Prefix+"host."+strconv.Itoa(i), amqp.Publishing{Body: []byte("x")}, PublishOptions{Mandatory: true}); err != nil {
			t.Fatal(err)
		}
	}
	rabbittest.Eventually(t, 20*time.Second, "every consumer receiving after the channel error", func() bool { return got.Load() >= int32(n) },
		func() string { return fmt.Sprintf("%d of %d received", got.Load(), n) })
	t.Logf("a channel error interrupted %d of %d consumers; all consume again", hit, n)
}

// A restore run that subscribed a consumer while it was being stopped
// hands its subscription over after Stop: the subscription is released,
// never left consuming with nobody reading (on a single-active-consumer
// queue it would hold the queue for good).
func TestHandOffAfterStopReleasesTheSubscription(t *testing.T) {
	b := rabbittest.Shared(t)
	ops := internalOps(t, b.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := b.Name("late-handoff")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q, Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, SingleActiveConsumer: true}}); err != nil {
		t.Fatal(err)
	}
	consumer, err := ops.Consume(ctx, ConsumerSpec{Queue: q, OrderedHandOver: true, Handler: func(context.Context, *Delivery) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := consumer.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	late, err := ops.reg.channels.subscribe(ctx, consumer.spec) // what the racing restore run made
	if err != nil {
		t.Fatal(err)
	}
	consumer.handOff(late)
	rabbittest.Eventually(t, 10*time.Second, "the late subscription released", func() bool {
		info, err := ops.Inspect(ctx, q)
		return err == nil && info.Consumers == 0
	})
}
