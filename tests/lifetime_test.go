package tests

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// queuesOf lists the queues of vhost, from the outside (an exclusive queue
// cannot even be looked at from another connection).
func queuesOf(t *testing.T, vhost string) []string {
	t.Helper()
	out, err := rabbittest.Ctl(context.Background(), "", "list_queues", "-p", vhost, "name", "--no-table-headers")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// waitQueueGone polls the broker until queue is gone, with a deadline.
func waitQueueGone(t *testing.T, vhost, queue string, within time.Duration) {
	t.Helper()
	rabbittest.Eventually(t, within, "queue "+queue+" to go", func() bool { return !slices.Contains(queuesOf(t, vhost), queue) })
}

// TestTemporaryTopicsLeaveNothingBehind: a mapping gives a topic's queue a
// lifetime; when its subscriber or connection goes, so does the queue.
func TestTemporaryTopicsLeaveNothingBehind(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	for _, tc := range []struct {
		name    string
		mapping warren.QueuePerTopic
		// closeConn: the queue goes with the connection, not the consumer.
		closeConn bool
		stays     bool
	}{
		{name: "connection-only", mapping: warren.QueuePerTopic{Lifetime: warren.ConnectionOnly}, closeConn: true},
		{name: "until-unused", mapping: warren.QueuePerTopic{Lifetime: warren.UntilUnused}},
		{name: "expires", mapping: warren.QueuePerTopic{QueueArgs: topology.QueueArgs{Expires: 300 * time.Millisecond}}},
		{name: "lasting", mapping: warren.QueuePerTopic{}, closeConn: true, stays: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := b.Name("life." + tc.name)
			c := openConn(t, b.URL)
			sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: tc.mapping})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sub.Subscribe(ctxT(t, 10*time.Second), topic); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(queuesOf(t, b.Vhost), topic) {
				t.Fatalf("queue %s not declared", topic)
			}
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.closeConn {
				if err := c.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if tc.stays {
				if !slices.Contains(queuesOf(t, b.Vhost), topic) {
					t.Fatalf("lasting queue %s gone", topic)
				}
				return
			}
			waitQueueGone(t, b.Vhost, topic, 10*time.Second)
		})
	}
}
