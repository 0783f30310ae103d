package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

// TestPartitionedTopicSharesAndKeepsKeyOrder: three service instances
// (subscribers on connections of their own) share a topic's 12 partitions;
// 6,000 messages over 300 keys are processed in order per key; when one
// instance's connection is cut, its partitions move to the other two and
// every message is still processed; when a fourth joins with messages
// waiting, the others hand partitions over to it, still in order; when the
// cut one comes back, it lets go of what the others took and the four
// share the partitions.
func TestPartitionedTopicSharesAndKeepsKeyOrder(t *testing.T) {
	b := rabbittest.Shared(t)
	mapping := warren.PartitionedTopic{Prefix: b.Prefix, Partitions: 12, RebalanceInterval: 200 * time.Millisecond}
	topic := "orders"
	for i := 0; i < 12; i++ {
		b.Name(fmt.Sprintf("orders.p%d", i))
	}
	b.Name("orders")
	b.Name("orders.members")

	got := newPartitionRun()
	proxy := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	var subs []*warren.Subscriber
	start := func(url string) {
		c := rabbittest.OpenConn(t, url, conn.Config{Reconnect: conn.RetryPolicy{FirstRetryImmediate: true, Backoff: retry.Backoff{MaxInterval: 200 * time.Millisecond}}})
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping, CloseTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close() })
		// 2ms of work a message: the hand-overs below happen while
		// partitions still hold messages.
		if err := sub.SubscribeFunc(context.Background(), topic, got.handler(len(subs), 2*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	start(proxy.URL(b.Vhost)) // the instance that will be cut
	start(b.URL)
	start(b.URL)
	share := func() []int {
		var n []int
		for _, s := range subs {
			n = append(n, len(s.PartitionsOf(topic)))
		}
		return n
	}
	waitUntil(t, "the 12 partitions shared 4 each", func() bool { s := share(); return s[0] == 4 && s[1] == 4 && s[2] == 4 })

	pubConn := openConn(t, b.URL)
	pub, err := warren.NewPublisher(pubConn, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	defer func() {
		if t.Failed() {
			for i := 0; i < 12; i++ {
				ready, unacked, _ := b.Messages(b.Prefix + fmt.Sprintf("orders.p%d", i))
				t.Logf("p%d: %d ready, %d unacked", i, ready, unacked)
			}
			t.Logf("processed %d, shares %v", got.processed(), share())
			for i, s := range subs {
				t.Logf("instance %d owns %v", i, s.PartitionsOf(topic))
			}
			out, _ := rabbittest.Ctl(context.Background(), "", "list_consumers", "-p", b.Vhost, "queue_name", "consumer_tag", "active", "channel_pid")
			t.Logf("consumers:\n%s", out)
		}
	}()
	processed := got.processed
	publishKeyed(t, pub, topic, 300, 0, 5)
	waitUntil(t, "the first 1,500 processed", func() bool { return processed() == 1500 })
	proxy.Cut() // instance 0 dies with its connection; its partitions move
	waitUntil(t, "the partitions moved to the two left", func() bool { s := share(); return s[1]+s[2] == 12 })
	publishKeyed(t, pub, topic, 300, 5, 10)
	waitUntil(t, "3,000 processed", func() bool { return processed() == 3000 })
	afterCut := []int{share()[1], share()[2]}

	// A fourth instance joins with 3,000 messages waiting: the two left
	// each hand two partitions over to it, with messages in flight
	// (ordered hand-overs: PITFALLS 33).
	publishKeyed(t, pub, topic, 300, 10, 20)
	start(b.URL)
	waitUntil(t, "6,000 processed", func() bool { return processed() == 6000 })
	waitUntil(t, "the partitions shared 4 each by the three left", func() bool { s := share(); return s[1] == 4 && s[2] == 4 && s[3] == 4 })
	afterJoin := share()[1:]

	// Instance 0 comes back. Its partition locks died with its old
	// connection and the others hold them now: it lets go of the
	// partitions its consumers came back to, and the four share them, 3
	// each, with 1,500 more messages in order.
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	publishKeyed(t, pub, topic, 300, 20, 25)
	waitUntil(t, "all 7,500 processed", func() bool { return processed() == 7500 })
	waitUntil(t, "the partitions shared 3 each by the four", func() bool {
		s := share()
		return s[0] == 3 && s[1] == 3 && s[2] == 3 && s[3] == 3
	})
	got.mu.Lock()
	defer got.mu.Unlock()
	t.Logf("per-key order violations: %d; messages per instance: %v; shares after the cut: %v, after the join: %v, after the return: %v",
		got.reorders, got.by, afterCut, afterJoin, share())
	if got.reorders != 0 {
		t.Fatalf("%d messages processed before an earlier one of their key", got.reorders)
	}
	for i := range subs {
		if got.by[i] == 0 {
			t.Fatalf("instance %d processed nothing: %v", i, got.by)
		}
	}
}

// TestPartitionLocks: a subscriber reads a partition only while it holds
// the partition's lock (an exclusive queue "<partition>.owner"): with one
// partition's lock held by another connection it reads the other 11, and
// takes the last once the lock is free. When it shuts down on a connection
// that stays open, it frees its locks for the others.
func TestPartitionLocks(t *testing.T) {
	b := rabbittest.Shared(t)
	mapping := warren.PartitionedTopic{Prefix: b.Prefix, Partitions: 12, RebalanceInterval: 100 * time.Millisecond}
	topic := "locks"
	var locks []string
	for i := 0; i < 12; i++ {
		b.Name(fmt.Sprintf("locks.p%d", i))
		locks = append(locks, b.Name(fmt.Sprintf("locks.p%d.owner", i)))
	}
	b.Name("locks")
	b.Name("locks.members")

	holder := b.Dial() // another member, holding p0
	defer holder.Close()
	hch, err := holder.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hch.QueueDeclare(locks[0], false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	c := openConn(t, b.URL)
	pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	got := newPartitionRun()
	publishKeyed(t, pub, topic, 300, 0, 2) // declares the partitions
	inP0 := 0
	for k := 0; k < 300; k++ {
		if warren.Partition(fmt.Sprintf("customer-%d", k), 12) == 0 {
			inP0 += 2
		}
	}
	sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SubscribeFunc(context.Background(), topic, got.handler(0, 0)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the 11 free partitions read", func() bool { return got.processed() == 600-inP0 })
	if owns := sub.PartitionsOf(topic); len(owns) != 11 || slices.Contains(owns, b.Prefix+"locks.p0") {
		t.Fatalf("with p0's lock held elsewhere the subscriber owns %v", owns)
	}
	if err := holder.Close(); err != nil { // the other member goes: its lock with it
		t.Fatal(err)
	}
	waitUntil(t, "p0 read too", func() bool { return got.processed() == 600 })
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// Its connection stays open: the locks must be free all the same.
	other := rabbittest.RawChannel(t, b.URL)
	for _, l := range locks {
		if _, err := other.QueueDeclare(l, false, false, true, false, nil); err != nil {
			t.Fatalf("lock %s still held after Close: %v", l, err)
		}
	}
}
