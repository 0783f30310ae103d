package warren

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
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
// count the broker reports) and owns a fair share, ceil(Partitions/count).
// A subscriber reads a partition only while it holds the partition's lock,
// an exclusive queue "<partition>.owner": the broker lets one connection
// hold it, cluster-wide, and deletes it with that connection, so a dead
// member's partitions are free as soon as the broker sees it gone. (The
// passive declare's consumer count cannot serve: on a single-active-
// consumer queue it counts only the active consumer, so two claimants look
// like one, and one of them would hold a share it never reads.) After a
// reconnect a member takes its locks again, and lets go of a partition
// whose lock another member took meanwhile. The partitions are quorum
// queues with single active consumer besides, so the broker delivers to
// one consumer at a time whatever the locks say during a hand-over.
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
	members *broker.Consumer

	lastCount int // members counted at the last look

	mu    sync.Mutex
	owned map[string]*subscription
	// lockGen is the connection generation each owned partition's lock was
	// taken on: a lock dies with its connection.
	lockGen  map[string]uint64
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
		return nil, &conn.ConfigError{Field: "warren.SubscriberConfig.MaxInFlight",
			Reason: "a partitioned topic keeps each key in order: one message at a time per partition; want 1"}
	}
	every := sub.Rebalance
	if every <= 0 {
		every = 2 * time.Second
	}
	memberSeq.Lock()
	memberSeq.n++
	id := fmt.Sprintf("%s/%d", connx.Peer(s.conn).ClientID, memberSeq.n)
	memberSeq.Unlock()
	g := &partitionGroup{s: s, ctx: ctx, topic: topic, sub: sub, h: h, id: id, every: every, owned: map[string]*subscription{},
		lockGen: map[string]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	if h == nil {
		g.out = make(chan *message.Message)
	}
	var err error
	g.members, err = s.ops.Consume(ctx, broker.ConsumerSpec{Queue: sub.Members, Handler: func(context.Context, *broker.Delivery) {}})
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

// rebalance owns the fair share: it takes its locks again after a
// reconnect (letting go of what another member took meanwhile), claims
// free partitions in order of preference up to its share, and releases the
// least preferred beyond it.
func (g *partitionGroup) rebalance(ctx context.Context) {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	var ended []string
	for q, st := range g.owned {
		select {
		case <-st.stopping: // ended with its consumer (a cancel, a close)
			delete(g.owned, q)
			ended = append(ended, q)
		default:
		}
	}
	g.mu.Unlock()
	for _, q := range ended {
		g.unlock(ctx, q)
	}
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
	owned := g.relock(ctx)
	for _, q := range ranked {
		if owned >= share {
			break
		}
		g.mu.Lock()
		_, mine := g.owned[q]
		stopped := g.stopped
		g.mu.Unlock()
		// A partition with a consumer is another member's (or being
		// handed over): not worth asking for its lock.
		if mine || stopped || g.consumers(ctx, q) != 0 {
			continue
		}
		if err := g.lock(ctx, q); err != nil {
			continue // another member's
		}
		st, err := g.s.consumeQueue(ctx, g.topic, Subscription{Queue: q}, g.h, true)
		if err != nil {
			g.s.log.Warn("warren: claiming a partition failed", "topic", g.topic, "partition", q, "err", err)
			g.unlock(ctx, q)
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
	if owned > share {
		// Release the least preferred: they go once their messages in
		// flight are settled, and another member claims them.
		for i := len(ranked) - 1; i >= 0 && owned > share; i-- {
			g.mu.Lock()
			st, mine := g.owned[ranked[i]]
			g.mu.Unlock()
			if mine {
				g.release(ctx, ranked[i], st, true)
				owned--
			}
		}
	}
}

// relock takes again, on the current connection, the locks of the
// partitions owned since an earlier one, and lets go of each partition
// whose lock another member holds now (its consumer, restored with the
// connection, waits behind that member's or is handed over to it in
// order). It returns how many partitions it owns.
func (g *partitionGroup) relock(ctx context.Context) int {
	gen := g.s.conn.Generation()
	g.mu.Lock()
	owned := maps.Clone(g.owned)
	g.mu.Unlock()
	n := len(owned)
	for q, st := range owned {
		g.mu.Lock()
		current := g.lockGen[q] == gen
		g.mu.Unlock()
		if current || gen == 0 {
			continue
		}
		err := g.lock(ctx, q)
		if errors.Is(err, conn.ErrResourceLocked) {
			g.s.log.Info("warren: another member took a partition while the connection was lost; letting it go", "topic", g.topic, "partition", q)
			g.release(ctx, q, st, false)
			n--
		}
	}
	return n
}

// lockOf names partition q's lock.
func lockOf(q string) string { return q + ".owner" }

// lock takes partition q's lock (nil), or finds another member holding it
// (conn.ErrResourceLocked), or cannot tell (another error).
func (g *partitionGroup) lock(ctx context.Context, q string) error {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.every*4)
	defer cancel()
	gen := g.s.conn.Generation()
	if _, err := g.s.ops.DeclareQueue(ictx, topology.QueueSpec{Name: lockOf(q), Exclusive: true}, broker.NoRestore()); err != nil {
		return err
	}
	g.mu.Lock()
	g.lockGen[q] = gen
	g.mu.Unlock()
	return nil
}

// forgetLock drops what this member knows of partition q's lock.
func (g *partitionGroup) forgetLock(q string) {
	g.mu.Lock()
	delete(g.lockGen, q)
	g.mu.Unlock()
}

// unlock frees partition q's lock for the other members.
func (g *partitionGroup) unlock(ctx context.Context, q string) {
	g.forgetLock(q)
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.every*4)
	defer cancel()
	if _, err := g.s.ops.DeleteQueue(ictx, lockOf(q), broker.DeleteOptions{}); err != nil {
		// Gone with its connection, or the connection is down: either
		// way it is freed when the connection goes.
		g.s.log.Debug("warren: freeing a partition lock failed", "topic", g.topic, "partition", q, "err", err)
	}
}

// consumers is how many active consumers partition q has, -1 when unknown.
func (g *partitionGroup) consumers(ctx context.Context, q string) int {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.every*4)
	defer cancel()
	info, err := g.s.ops.Inspect(ictx, q)
	if err != nil {
		return -1
	}
	return info.Consumers
}

// release lets partition q go, once its messages in flight are settled
// (an ordered hand-over), then frees its lock when it is this member's.
func (g *partitionGroup) release(ctx context.Context, q string, st *subscription, locked bool) {
	g.mu.Lock()
	delete(g.owned, q)
	g.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.s.cfg.CloseTimeout)
	defer cancel()
	st.stop(sctx)
	if locked {
		g.unlock(ctx, q)
	} else {
		g.forgetLock(q)
	}
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
		_ = g.members.Stop(context.Background())
	}
	if g.out != nil {
		go func() {
			g.forwards.Wait()
			close(g.out)
		}()
	}
}

// close ends the group when Subscribe's ctx ends: no more claims, and its
// partitions released (each handed over, then its lock freed).
func (g *partitionGroup) close() {
	g.stopClaiming()
	g.mu.Lock()
	owned := g.owned
	g.owned = map[string]*subscription{}
	g.mu.Unlock()
	for q, st := range owned {
		g.s.group.Go("release partition "+q, func() {
			ctx, cancel := context.WithTimeout(context.Background(), g.s.cfg.CloseTimeout)
			defer cancel()
			st.stop(ctx)
			g.unlock(ctx, q)
		})
	}
}

// unlockAll frees the locks still held once the partitions' subscriptions
// have stopped (Shutdown): on a connection that others go on using, they
// would keep the partitions from the other members.
func (g *partitionGroup) unlockAll(ctx context.Context) {
	g.mu.Lock()
	locked := slices.Collect(maps.Keys(g.lockGen))
	g.mu.Unlock()
	for _, q := range locked {
		g.unlock(ctx, q)
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
