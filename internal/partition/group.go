// Package partition is the engine of a partitioned topic's subscription:
// one subscriber's fair share of the topic's partitions, claimed, handed
// over in order and rebalanced as subscribers come and go.
//
// The subscribers of a topic share its partitions: each counts the
// subscribers (they all consume the topic's members queue, whose consumer
// count the broker reports) and owns a fair share, ceil(partitions/count).
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
// ones still checked out to it (PITFALLS 33: a cancelled single active
// consumer's unacked messages go back behind the next consumer's): it
// finishes the message in hand, hands out nothing more and closes the
// partition's channel (each partition has its own), so the broker returns
// what it held to the head of the queue before it activates the next
// member. A member that dies loses its channels the same way. What is left
// is at-least-once: a message whose handler ran but whose ack was lost with
// a connection is given again to the next member, ahead of the ones after
// it.
//
// Which partitions a subscriber prefers is a rendezvous hash of its id and
// the partition: shares barely move when one comes or goes. Every
// Rebalance a subscriber claims what is unowned up to its share and
// releases what is beyond it: when one dies, its consumers go with its
// connection and the others take its partitions over.
package partition

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

// Member is one owned partition's subscription, started by Config.Consume.
type Member interface {
	// Stop ends it with an ordered hand-over, letting its handler settle
	// what it holds until ctx ends.
	Stop(ctx context.Context)
	// Ended is closed once it stops, by Stop or with its consumer.
	Ended() <-chan struct{}
	// Out hands out its messages; nil when a handler runs them.
	Out() <-chan *message.Message
	// Pause and Resume stop and restart its consumption, keeping the
	// partition (and its lock).
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Config is what a Group needs.
type Config struct {
	Conn *conn.Conn
	Ops  *broker.Ops
	Log  *slog.Logger
	// Topic, Partitions and Members are the subscription's: the topic, its
	// partition queues, and the queue every member consumes to be counted.
	Topic      string
	Partitions []string
	Members    string
	// ID names this member in the rendezvous hash.
	ID string
	// Rebalance is how often the member looks at its share; each look's
	// broker calls are bounded by 4×Rebalance.
	Rebalance time.Duration
	// Handled: a handler runs the messages (no output channel).
	Handled bool
	// Consume starts the subscription of a partition queue.
	Consume func(queue string) (Member, error)
	// StopTimeout bounds a released partition's hand-over.
	StopTimeout time.Duration
	// Go runs fn on a goroutine the subscriber's Shutdown waits for;
	// false once it is closing.
	Go func(name string, fn func()) bool
}

// Group is one subscriber's share of a partitioned topic.
type Group struct {
	cfg     Config
	out     chan *message.Message // nil with a handler
	members *broker.Consumer

	lastCount int // members counted at the last look (the loop's)

	mu    sync.Mutex
	owned map[string]Member
	// lockGen is the connection generation each owned partition's lock was
	// taken on: a lock dies with its connection.
	lockGen map[string]uint64
	stopped bool
	// paused: the owned partitions are paused and nothing more is claimed
	// until Resume.
	paused   bool
	forwards sync.WaitGroup
	stop     chan struct{}
	done     chan struct{}
	outOnce  sync.Once
}

// Start joins the members of the topic, claims a first share and starts
// the rebalancing loop.
func Start(ctx context.Context, cfg Config) (*Group, error) {
	g := &Group{cfg: cfg, owned: map[string]Member{}, lockGen: map[string]uint64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if !cfg.Handled {
		g.out = make(chan *message.Message)
	}
	var err error
	g.members, err = cfg.Ops.Consume(ctx, broker.ConsumerSpec{Queue: cfg.Members, Handler: func(context.Context, *broker.Delivery) {}})
	if err != nil {
		return nil, fmt.Errorf("warren: join the members of topic %q: %w", cfg.Topic, err)
	}
	g.rebalance()
	if !cfg.Go("partitions of "+cfg.Topic, g.loop) {
		close(g.done)
		g.StopClaiming()
		return nil, conn.ErrClosed
	}
	return g, nil
}

// Out is the group's output channel: every owned partition's messages.
func (g *Group) Out() <-chan *message.Message { return g.out }

// Topic is the topic the group shares.
func (g *Group) Topic() string { return g.cfg.Topic }

func (g *Group) loop() {
	defer close(g.done)
	t := time.NewTicker(g.cfg.Rebalance)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.rebalance()
		}
	}
}

// callTimeout bounds each broker call of a look at the share: a look that
// waited longer would act on a count already stale.
func (g *Group) callTimeout() time.Duration { return 4 * g.cfg.Rebalance }

// rank orders the partitions by this member's preference.
func (g *Group) rank() []string {
	ranked := slices.Clone(g.cfg.Partitions)
	score := func(q string) uint64 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(g.cfg.ID + "\x00" + q))
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
func (g *Group) rebalance() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	var ended []string
	for q, m := range g.owned {
		select {
		case <-m.Ended(): // ended with its consumer (a cancel, a close)
			delete(g.owned, q)
			ended = append(ended, q)
		default:
		}
	}
	g.mu.Unlock()
	for _, q := range ended {
		g.unlock(q)
	}
	ictx, cancel := context.WithTimeout(context.Background(), g.callTimeout())
	info, err := g.cfg.Ops.Inspect(ictx, g.cfg.Members)
	cancel()
	if err != nil || info.Consumers == 0 {
		// Not known now (a connection or a node lost): keep the last
		// count rather than take every partition.
		g.cfg.Log.Debug("warren: counting the members of a partitioned topic failed", "topic", g.cfg.Topic, "error", err)
		info.Consumers = g.lastCount
	}
	count := max(info.Consumers, 1)
	g.lastCount = count
	share := int(math.Ceil(float64(len(g.cfg.Partitions)) / float64(count)))
	ranked := g.rank()
	owned := g.relock()
	for _, q := range ranked {
		if owned >= share {
			break
		}
		g.mu.Lock()
		_, mine := g.owned[q]
		stopped, paused := g.stopped, g.paused
		g.mu.Unlock()
		if paused {
			break // a paused share claims nothing: it would consume it
		}
		// A partition with a consumer is another member's (or being
		// handed over): not worth asking for its lock.
		if mine || stopped || g.consumers(q) != 0 {
			continue
		}
		if err := g.lock(q); err != nil {
			continue // another member's
		}
		m, err := g.cfg.Consume(q)
		if err != nil {
			g.cfg.Log.Warn("warren: claiming a partition failed", "topic", g.cfg.Topic, "partition", q, "error", err)
			g.unlock(q)
			continue
		}
		g.mu.Lock()
		g.owned[q] = m
		g.mu.Unlock()
		if g.out != nil {
			g.forward(q, m)
		}
		owned++
	}
	if owned > share {
		// Release the least preferred: they go once their messages in
		// flight are settled, and another member claims them.
		for i := len(ranked) - 1; i >= 0 && owned > share; i-- {
			g.mu.Lock()
			m, mine := g.owned[ranked[i]]
			g.mu.Unlock()
			if mine {
				g.release(ranked[i], m, true)
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
func (g *Group) relock() int {
	gen := g.cfg.Conn.Generation()
	g.mu.Lock()
	owned := maps.Clone(g.owned)
	g.mu.Unlock()
	n := len(owned)
	for q, m := range owned {
		g.mu.Lock()
		current := g.lockGen[q] == gen
		g.mu.Unlock()
		if current || gen == 0 {
			continue
		}
		err := g.lock(q)
		if errors.Is(err, conn.ErrResourceLocked) {
			g.cfg.Log.Info("warren: another member took a partition while the connection was lost; letting it go", "topic", g.cfg.Topic, "partition", q)
			g.release(q, m, false)
			n--
		}
	}
	return n
}

// lockOf names partition q's lock.
func lockOf(q string) string { return q + ".owner" }

// lock takes partition q's lock (nil), or finds another member holding it
// (conn.ErrResourceLocked), or cannot tell (another error).
func (g *Group) lock(q string) error {
	ctx, cancel := context.WithTimeout(context.Background(), g.callTimeout())
	defer cancel()
	gen := g.cfg.Conn.Generation()
	if _, err := g.cfg.Ops.DeclareQueue(ctx, topology.QueueSpec{Name: lockOf(q), Exclusive: true}, broker.NoRestore()); err != nil {
		return err
	}
	g.mu.Lock()
	g.lockGen[q] = gen
	g.mu.Unlock()
	return nil
}

// forgetLock drops what this member knows of partition q's lock.
func (g *Group) forgetLock(q string) {
	g.mu.Lock()
	delete(g.lockGen, q)
	g.mu.Unlock()
}

// unlock frees partition q's lock for the other members.
func (g *Group) unlock(q string) {
	g.forgetLock(q)
	ctx, cancel := context.WithTimeout(context.Background(), g.callTimeout())
	defer cancel()
	if _, err := g.cfg.Ops.DeleteQueue(ctx, lockOf(q), broker.DeleteOptions{}); err != nil {
		// Gone with its connection, or the connection is down: either
		// way it is freed when the connection goes.
		g.cfg.Log.Debug("warren: freeing a partition lock failed", "topic", g.cfg.Topic, "partition", q, "error", err)
	}
}

// consumers is how many active consumers partition q has, -1 when unknown.
func (g *Group) consumers(q string) int {
	ctx, cancel := context.WithTimeout(context.Background(), g.callTimeout())
	defer cancel()
	info, err := g.cfg.Ops.Inspect(ctx, q)
	if err != nil {
		return -1
	}
	return info.Consumers
}

// release lets partition q go, once its messages in flight are settled
// (an ordered hand-over), then frees its lock when it is this member's.
func (g *Group) release(q string, m Member, locked bool) {
	g.mu.Lock()
	delete(g.owned, q)
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.StopTimeout)
	defer cancel()
	m.Stop(ctx)
	if locked {
		g.unlock(q)
	} else {
		g.forgetLock(q)
	}
}

// forward passes a partition's messages on to the group's channel, on a
// goroutine the subscriber owns.
func (g *Group) forward(q string, m Member) {
	g.forwards.Add(1)
	started := g.cfg.Go("forward partition "+q, func() {
		defer g.forwards.Done()
		for msg := range m.Out() {
			select {
			case g.out <- msg:
			case <-g.stop:
				// Nobody takes messages any more: back to the partition.
				msg.Nack()
				for msg := range m.Out() {
					msg.Nack()
				}
				return
			}
		}
	})
	if !started {
		g.forwards.Done()
		// The subscriber is closing: its Shutdown stops the partition.
	}
}

// Owns is the partitions this member reads now, sorted.
func (g *Group) Owns() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := slices.Collect(maps.Keys(g.owned))
	slices.Sort(out)
	return out
}

// Pause pauses every owned partition's consumption (each keeps its lock,
// so no other member takes it: the partition's order holds) and claims
// nothing more until Resume. A partition released meanwhile (the share
// shrank) is handed over in order as always.
func (g *Group) Pause(ctx context.Context) error {
	return g.setPaused(true, func(m Member) error { return m.Pause(ctx) })
}

// Resume consumes the owned partitions again, and claims again.
func (g *Group) Resume(ctx context.Context) error {
	return g.setPaused(false, func(m Member) error { return m.Resume(ctx) })
}

// setPaused records paused and applies f to every owned partition.
func (g *Group) setPaused(paused bool, f func(Member) error) error {
	g.mu.Lock()
	g.paused = paused
	owned := slices.Collect(maps.Values(g.owned))
	g.mu.Unlock()
	var errs []error
	for _, m := range owned {
		errs = append(errs, f(m))
	}
	return errors.Join(errs...)
}

// Paused reports whether Pause is in force.
func (g *Group) Paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// StopClaiming ends the rebalancing and leaves the group: no partition is
// claimed or released any more. The owned partitions stop with the
// subscriber (Release, or the subscriber's Shutdown). Idempotent.
func (g *Group) StopClaiming() {
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
}

// CloseOutput closes the output channel once every forwarder has returned
// (they return once their partitions' subscriptions have stopped).
// Idempotent.
func (g *Group) CloseOutput() {
	if g.out == nil {
		return
	}
	g.forwards.Wait()
	g.outOnce.Do(func() { close(g.out) })
}

// Release ends the group when its Subscribe's ctx ends: no more claims, and
// every partition released (handed over, then its lock freed), then the
// output channel closed, on a goroutine the subscriber owns.
func (g *Group) Release() {
	g.StopClaiming()
	g.mu.Lock()
	owned := g.owned
	g.owned = map[string]Member{}
	g.mu.Unlock()
	g.cfg.Go("release partitions of "+g.cfg.Topic, func() {
		var wg sync.WaitGroup
		for q, m := range owned {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), g.cfg.StopTimeout)
				defer cancel()
				m.Stop(ctx)
				g.unlock(q)
			})
		}
		wg.Wait()
		g.CloseOutput()
	})
}

// UnlockAll frees the locks still held once the partitions' subscriptions
// have stopped (Shutdown): on a connection that others go on using, they
// would keep the partitions from the other members.
func (g *Group) UnlockAll() {
	g.mu.Lock()
	locked := slices.Collect(maps.Keys(g.lockGen))
	g.mu.Unlock()
	for _, q := range locked {
		g.unlock(q)
	}
}
