package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/topology"
)

// TestClusterFailover: a 3-node cluster, a quorum queue and a client given
// all three addresses. Killing the node the client is on moves it to
// another; topology and consumers come back and no confirmed message is
// lost. It prints the failover time.
func TestClusterFailover(t *testing.T) {
	nodes := rabbittest.StartCluster(t, 3)
	c, err := conn.New(rabbittest.ClusterURL(nodes), conn.Config{
		Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{InitialInterval: 50 * time.Millisecond, MaxInterval: time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	connected := make(chan time.Time, 10)
	c.OnStateChange(func(ch conn.StateChange) {
		if ch.To == conn.StateConnected && ch.From == conn.StateReconnecting {
			connected <- time.Now()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())

	m := warren.QueuePerTopic{QueueArgs: topology.QueueArgs{Type: topology.Quorum}}
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m, PublishTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m, MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const topic = "cluster.orders"
	out, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]bool{}
	go func() {
		for msg := range out {
			mu.Lock()
			got[msg.UUID] = true
			mu.Unlock()
			msg.Ack()
		}
	}()
	publishBatch := func(prefix string, n int) []string {
		var ids []string
		var msgs []*message.Message
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			ids = append(ids, id)
			msgs = append(msgs, message.NewMessage(id, []byte("x")))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			t.Fatalf("publish %s: %v", prefix, err)
		}
		return ids
	}
	before := publishBatch("before", 200)

	var victim *rabbittest.Node
	for _, n := range nodes {
		if strings.Contains(c.Endpoint(), n.Addr()) {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("connected to %q, not a cluster node", c.Endpoint())
	}
	killedAt := time.Now()
	victim.Kill()
	var back time.Time
	select {
	case back = <-connected:
	case <-time.After(2 * time.Minute):
		t.Fatal("no failover")
	}
	if strings.Contains(c.Endpoint(), victim.Addr()) {
		t.Fatalf("reconnected to the killed node %s", victim.Addr())
	}
	after := publishBatch("after", 200)
	missing := 0
	rabbittest.Eventually(t, 2*time.Minute, "every confirmed message consumed after failover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		missing = 0
		for _, id := range append(before, after...) {
			if !got[id] {
				missing++
			}
		}
		return missing == 0
	}, func() string { return fmt.Sprintf("%d lost or never consumed", missing) })
	fmt.Printf("cluster: killed %s, connected to %s again after %v; 400 confirmed messages, none lost, consumer back\n",
		victim.Addr(), c.Endpoint(), back.Sub(killedAt).Round(time.Millisecond))
}
