package warren

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/partition"
	"github.com/warrenmq/warren/topology"
)

// PartitionKeyMetadata is the metadata key PartitionedTopic reads a
// message's partition key from.
const PartitionKeyMetadata = "partition_key"

// PartitionedTopic splits each topic into Partitions quorum queues, routed
// by a key the publisher gives each message (metadata "partition_key", else
// its UUID): messages of one key go to one partition, in order. Hashing is
// done by the client (FNV-1a of the key modulo Partitions, onto a direct
// exchange with a binding per partition): it needs no broker plugin, and
// the partition of a key is the same for every publisher.
//
// The subscribers of a topic share its partitions (PartitionedSubscription):
// each owns a fair share, reads a partition only while it holds the
// partition's lock, keeps per-key order across hand-overs, and takes over
// the partitions of a subscriber that dies.
type PartitionedTopic struct {
	Prefix string
	// Partitions per topic. Default: 16.
	Partitions int
	// Key gives a message's partition key. Default: its "partition_key"
	// metadata, else its UUID.
	Key func(*message.Message) string
	// RebalanceInterval is how often a subscriber looks at its share.
	// Default: 2s.
	RebalanceInterval time.Duration
}

func (m PartitionedTopic) partitions() int {
	if m.Partitions <= 0 {
		return 16
	}
	return m.Partitions
}

func (m PartitionedTopic) rebalanceInterval() time.Duration {
	if m.RebalanceInterval <= 0 {
		return defaultRebalance
	}
	return m.RebalanceInterval
}

func (m PartitionedTopic) topology(topic string) (topology.Topology, []string, string) {
	x := topology.ExchangeSpec{Name: m.Prefix + topic, Type: topology.Direct, Durable: true}
	t := topology.Topology{Exchanges: []topology.ExchangeSpec{x}}
	var queues []string
	for i := range m.partitions() {
		q := topology.QueueSpec{Name: fmt.Sprintf("%s%s.p%d", m.Prefix, topic, i), Durable: true,
			Args: topology.QueueArgs{Type: topology.Quorum, SingleActiveConsumer: true}}
		t.Queues = append(t.Queues, q)
		t.Bindings = append(t.Bindings, topology.BindSpec{Source: x.Name, Destination: q.Name, RoutingKey: strconv.Itoa(i)})
		queues = append(queues, q.Name)
	}
	// The members queue is replicated like the partitions: the count of
	// members must survive the loss of a node.
	members := topology.QueueSpec{Name: m.Prefix + topic + ".members", Durable: true,
		Args: topology.QueueArgs{Type: topology.Quorum, Expires: time.Hour}}
	t.Queues = append(t.Queues, members)
	return t, queues, members.Name
}

// Partition is the partition of key among n (0 to n-1); with n below 1
// there are no partitions and it is -1.
func Partition(key string, n int) int {
	if n < 1 {
		return -1
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Destination publishes each message to its key's partition.
func (m PartitionedTopic) Destination(topic string) (Destination, error) {
	t, _, _ := m.topology(topic)
	n := m.partitions()
	key := m.Key
	if key == nil {
		key = func(msg *message.Message) string {
			if k := msg.Metadata.Get(PartitionKeyMetadata); k != "" {
				return k
			}
			return msg.UUID
		}
	}
	return Destination{Exchange: m.Prefix + topic, KeyOf: func(msg *message.Message) string { return strconv.Itoa(Partition(key(msg), n)) },
		Topology: t}, t.Validate()
}

// Subscription owns a share of the topic's partitions.
func (m PartitionedTopic) Subscription(topic string) (Subscription, error) {
	t, queues, members := m.topology(topic)
	return PartitionedSubscription{Topology: t, Partitions: queues, Members: members, Rebalance: m.rebalanceInterval()}, t.Validate()
}

// PartitionedSubscription shares a partitioned topic's partitions among its
// subscribers: each owns a fair share, ceil(partitions/subscribers), one
// consumer per partition and one message at a time per partition
// (MaxInFlight 1), so that each key's messages are handled in order.
//
// Each subscriber counts the others by the consumers of the Members queue
// (which all of them consume), reads a partition only while it holds the
// partition's lock (an exclusive queue "<partition>.owner", which the
// broker deletes with a dead subscriber's connection), and prefers
// partitions by a rendezvous hash of its id, so that shares barely move as
// subscribers come and go. It lets a partition go without basic.cancel (at
// which the broker would activate the next consumer with this one's
// messages still checked out): it finishes the message in hand and closes
// the partition's channel, so the next owner starts where it stopped. What
// is left is at-least-once: a message whose ack was lost with a connection
// comes again, ahead of the ones after it.
type PartitionedSubscription struct {
	// Partitions are the partition queues.
	Partitions []string
	// Members is the queue every subscriber of the topic consumes, to be
	// counted.
	Members string
	// Rebalance is how often a subscriber looks at its share. Default: 2s.
	Rebalance time.Duration
	// Topology is declared (and restored) by SubscribeInitialize and
	// Subscribe: the exchange, the partitions and the members queue.
	Topology topology.Topology
}

func (s PartitionedSubscription) declares() topology.Topology { return s.Topology }

// defaultRebalance is PartitionedTopic's and PartitionedSubscription's
// default Rebalance: a dead subscriber's partitions wait at most about
// this long for another owner.
const defaultRebalance = 2 * time.Second

// memberSeq numbers the partition groups of the process, for their ids.
var memberSeq atomic.Uint64

func (s *Subscriber) subscribePartitions(ctx context.Context, topic string, sub PartitionedSubscription, h func(*message.Message) error) (<-chan *message.Message, error) {
	if s.cfg.MaxInFlight > 1 {
		return nil, &conn.ConfigError{Field: "warren.SubscriberConfig.MaxInFlight",
			Reason: "a partitioned topic keeps each key in order: one message at a time per partition; want 1"}
	}
	every := sub.Rebalance
	if every <= 0 {
		every = defaultRebalance
	}
	g, err := partition.Start(ctx, partition.Config{
		Conn: s.conn, Ops: s.ops, Log: s.log,
		Topic: topic, Partitions: sub.Partitions, Members: sub.Members,
		ID:        fmt.Sprintf("%s/%d", connx.Peer(s.conn).ClientID, memberSeq.Add(1)),
		Rebalance: every, Handled: h != nil, StopTimeout: s.cfg.CloseTimeout, Go: s.group.Go,
		Consume: func(q string) (partition.Member, error) {
			return s.consumeQueue(ctx, topic, consumeOptions{queue: q, kind: queueKind{}, orderedHandOver: true}, h)
		},
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed { // Shutdown ran meanwhile
		s.mu.Unlock()
		g.Release()
		return nil, conn.ErrClosed
	}
	s.groups = append(s.groups, g)
	s.mu.Unlock()
	if ctx.Done() != nil {
		context.AfterFunc(ctx, g.Release)
	}
	return g.Out(), nil
}

// PartitionsOf is the partitions of topic this subscriber reads now (for
// operators and tests: shares move as subscribers come and go).
func (s *Subscriber) PartitionsOf(topic string) []string {
	s.mu.Lock()
	groups := slices.Clone(s.groups)
	s.mu.Unlock()
	var out []string
	for _, g := range groups {
		if g.Topic() == topic {
			out = append(out, g.Owns()...)
		}
	}
	return out
}
