package warren

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

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
// The subscribers of a topic share its partitions: each counts the
// subscribers (they all consume the topic's members queue, whose consumer
// count the broker reports) and owns a fair share, ceil(Partitions/count):
// it consumes partitions that have no consumer. The partitions are quorum
// queues with single active consumer, so even when two subscribers claim
// one at once the broker delivers to one of them at a time; each then lets
// go with probability one half per look, until one keeps it.
//
// Per-key order holds across hand-overs too. A member lets a partition go
// without basic.cancel, at which the broker would activate the next
// consumer while this one's message is still in hand and its prefetched
// ones still checked out to it (PITFALLS 33): it finishes the message in
// hand, hands out nothing more and closes the partition's channel (each
// partition has its own), so the broker returns what it held to the head
// of the queue before it activates the next member. A member that dies
// loses its channels the same way. What is left is at-least-once: a message
// whose handler ran but whose ack was lost with a connection is given again
// to the next member, ahead of the ones after it.
//
// Which partitions a subscriber prefers is a rendezvous hash of its id and
// the partition: shares barely move when one comes or goes. Every
// RebalanceInterval a subscriber claims what is unowned up to its share and
// releases what is beyond it: when one dies, its consumers go with its
// connection and the others take its partitions over.
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
		return 2 * time.Second
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

// Partition is the partition of key among n.
func Partition(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Route publishes each message to its key's partition.
func (m PartitionedTopic) Route(topic string) (Route, error) {
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
	return Route{Exchange: m.Prefix + topic, KeyOf: func(msg *message.Message) string { return strconv.Itoa(Partition(key(msg), n)) },
		Topology: t}, t.Validate()
}

// Subscription owns a share of the topic's partitions.
func (m PartitionedTopic) Subscription(topic string) (Subscription, error) {
	t, queues, members := m.topology(topic)
	return Subscription{Topology: t, Partitions: queues, Members: members, Rebalance: m.rebalanceInterval()}, t.Validate()
}

// partitionGroup is one subscriber's share of a partitioned topic.
type partitionGroup struct {
	s *Subscriber
	// ctx is Subscribe's: the partitions' subscriptions live as long as
	// it does.
	ctx     context.Context
	topic   string
	sub     Subscription
	h       func(*message.Message) error
	id      string
	every   time.Duration
	out     chan *message.Message // nil with a handler
	members *topology.Consumer

	lastCount int // members counted at the last look

	mu       sync.Mutex
	owned    map[string]*subscription
	stopped  bool
	forwards sync.WaitGroup
	stop     chan struct{}
	done     chan struct{}
}

// memberSeq numbers the groups of the process, for their ids.
var memberSeq struct {
	sync.Mutex
	n int
}

func (s *Subscriber) subscribePartitions(ctx context.Context, topic string, sub Subscription, h func(*message.Message) error) (<-chan *message.Message, error) {
	if s.cfg.MaxInFlight > 1 {
		return nil, &ConfigError{Field: "warren.SubscriberConfig.MaxInFlight",
			Reason: "a partitioned topic keeps each key in order: one message at a time per partition; want 1"}
	}
	every := sub.Rebalance
	if every <= 0 {
		every = 2 * time.Second
	}
	memberSeq.Lock()
	memberSeq.n++
	id := fmt.Sprintf("%s/%d", s.conn.Peer().ClientID, memberSeq.n)
	memberSeq.Unlock()
	g := &partitionGroup{s: s, ctx: ctx, topic: topic, sub: sub, h: h, id: id, every: every, owned: map[string]*subscription{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if h == nil {
		g.out = make(chan *message.Message)
	}
	var err error
	g.members, err = s.ops.Consume(ctx, topology.ConsumerSpec{Queue: sub.Members, Handler: func(context.Context, *topology.Delivery) {}})
	if err != nil {
		return nil, fmt.Errorf("warren: join the members of topic %q: %w", topic, err)
	}
	s.mu.Lock()
	s.groups = append(s.groups, g)
	s.mu.Unlock()
	g.rebalance(ctx)
	s.group.Go("partitions of "+topic, g.loop)
	if ctx.Done() != nil {
		context.AfterFunc(ctx, g.close)
	}
	return g.out, nil
}

func (g *partitionGroup) loop() {
	defer close(g.done)
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.rebalance(g.ctx)
		}
	}
}

// rank orders the partitions by this member's preference.
func (g *partitionGroup) rank() []string {
	ranked := slices.Clone(g.sub.Partitions)
	score := func(q string) uint64 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(g.id + "\x00" + q))
		return h.Sum64()
	}
	slices.SortFunc(ranked, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	return ranked
}

// rebalance owns the fair share: it claims unowned partitions in order of
// preference up to it, and releases the least preferred beyond it.
func (g *partitionGroup) rebalance(ctx context.Context) {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	for q, st := range g.owned {
		select {
		case <-st.stopping: // ended with its consumer (a reconnect, a cancel)
			delete(g.owned, q)
		default:
		}
	}
	g.mu.Unlock()
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.every*4)
	info, err := g.s.ops.Inspect(ictx, g.sub.Members)
	cancel()
	if err != nil || info.Consumers == 0 {
		// Not known now (a connection or a node lost): keep the last
		// count rather than take every partition.
		g.s.log.Debug("warren: counting the members of a partitioned topic failed", "topic", g.topic, "err", err)
		info.Consumers = g.lastCount
	}
	count := max(info.Consumers, 1)
	g.lastCount = count
	share := int(math.Ceil(float64(len(g.sub.Partitions)) / float64(count)))
	ranked := g.rank()
	g.mu.Lock()
	owned := len(g.owned)
	g.mu.Unlock()
	for _, q := range ranked {
		if owned >= share {
			break
		}
		g.mu.Lock()
		_, mine := g.owned[q]
		stopped := g.stopped
		g.mu.Unlock()
		if mine || stopped || g.consumers(ctx, q) != 0 {
			continue // ours, or another member's
		}
		st, err := g.s.consumeQueue(ctx, g.topic, Subscription{Queue: q}, g.h, true)
		if err != nil {
			g.s.log.Warn("warren: claiming a partition failed", "topic", g.topic, "partition", q, "err", err)
			continue
		}
		g.mu.Lock()
		g.owned[q] = st
		g.mu.Unlock()
		if g.out != nil {
			g.forward(st)
		}
		owned++
	}
	// A partition claimed by two members at once (both saw it free): the
	// broker keeps one active, and each claimant lets go with probability
	// one half per look, so that one soon keeps it and the other's share
	// goes to a partition nobody reads.
	for _, q := range ranked {
		g.mu.Lock()
		st, mine := g.owned[q]
		g.mu.Unlock()
		if mine && g.consumers(ctx, q) > 1 && rand.IntN(2) == 0 {
			g.release(ctx, q, st)
			owned--
		}
	}
	if owned > share {
		// Release the least preferred: they go once their messages in
		// flight are settled, and another member claims them.
		for i := len(ranked) - 1; i >= 0 && owned > share; i-- {
			g.mu.Lock()
			st, mine := g.owned[ranked[i]]
			g.mu.Unlock()
			if mine {
				g.release(ctx, ranked[i], st)
				owned--
			}
		}
	}
}

// consumers is how many consumers partition q has, -1 when unknown.
func (g *partitionGroup) consumers(ctx context.Context, q string) int {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.every*4)
	defer cancel()
	info, err := g.s.ops.Inspect(ictx, q)
	if err != nil {
		return -1
	}
	return info.Consumers
}

// release lets partition q go, once its messages in flight are settled.
func (g *partitionGroup) release(ctx context.Context, q string, st *subscription) {
	g.mu.Lock()
	delete(g.owned, q)
	g.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.s.cfg.CloseTimeout)
	defer cancel()
	st.stop(sctx)
}

// forward passes a partition's messages on to the group's channel.
func (g *partitionGroup) forward(st *subscription) {
	g.forwards.Add(1)
	go func() {
		defer g.forwards.Done()
		for m := range st.out {
			select {
			case g.out <- m:
			case <-g.stop:
				// Nobody takes messages any more: back to the partition.
				m.Nack()
				for m := range st.out {
					m.Nack()
				}
				return
			}
		}
	}()
}

// owns is the partitions this member reads now.
func (g *partitionGroup) owns() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for q := range g.owned {
		out = append(out, q)
	}
	slices.Sort(out)
	return out
}

// stopClaiming ends the rebalancing; the owned subscriptions stop with the
// Subscriber's.
func (g *partitionGroup) stopClaiming() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	close(g.stop)
	g.mu.Unlock()
	<-g.done
	if g.members != nil {
		_ = g.s.ops.StopConsume(context.Background(), g.members)
	}
	if g.out != nil {
		go func() {
			g.forwards.Wait()
			close(g.out)
		}()
	}
}

// close ends the group when Subscribe's ctx ends: no more claims, and its
// partitions released.
func (g *partitionGroup) close() {
	g.stopClaiming()
	g.mu.Lock()
	owned := g.owned
	g.owned = map[string]*subscription{}
	g.mu.Unlock()
	for _, st := range owned {
		st.stopInBackground()
	}
}

// PartitionsOf is the partitions of topic this subscriber reads now (for
// operators and tests: shares move as subscribers come and go).
func (s *Subscriber) PartitionsOf(topic string) []string {
	s.mu.Lock()
	groups := slices.Clone(s.groups)
	s.mu.Unlock()
	var out []string
	for _, g := range groups {
		if g.topic == topic {
			out = append(out, g.owns()...)
		}
	}
	return out
}
