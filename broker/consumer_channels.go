package broker

import (
	"context"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
)

// consumersPerChannel is how many consumers share one channel. A channel
// per consumer caps a connection at channel_max (2047 by default) consumers
// (PITFALLS 27); sharing lifts that. A channel error costs every consumer
// on the channel its subscription (they come back by themselves), so the
// groups stay small, and nothing that can fail on the broker's side runs on
// a shared channel without a check first (see Consumer.ensureQueue).
const consumersPerChannel = 32

// channelSet is a connection's channels for consumers.
type channelSet struct {
	conn       *conn.Conn
	perChannel int

	mu       sync.Mutex
	channels []*sharedChannel
}

// sharedChannel is one channel and the consumers on it.
type sharedChannel struct {
	ch        *conn.Channel
	dedicated bool

	// callMu serialises basic.qos + basic.consume: qos (global false)
	// applies to the consumers started after it on the channel.
	callMu   sync.Mutex
	prefetch [2]int
	qosSet   bool

	tags map[string]struct{} // guarded by channelSet.mu

	// acks holds its deliveries' acks back to send runs of them at once.
	acks ackBatch
}

// subscription is one consumer's basic.consume on a shared channel.
type subscription struct {
	channel *sharedChannel
	tag     string
	msgs    <-chan amqp.Delivery
}

// place picks a shared channel for a consumer with tag (opening a channel when no
// open one has room), and reserves the tag on it.
func (cs *channelSet) place(ctx context.Context, tag string, dedicated bool) (*sharedChannel, error) {
	gen := connx.GenerationFor(cs.conn, ctx)
	cs.mu.Lock()
	live := cs.channels[:0]
	for _, h := range cs.channels {
		if h.ch.IsOpen() {
			live = append(live, h)
		}
	}
	clear(cs.channels[len(live):])
	cs.channels = live
	if !dedicated {
		for _, h := range cs.channels {
			if _, dup := h.tags[tag]; !dup && !h.dedicated && len(h.tags) < cs.perChannel && connx.ChannelGeneration(h.ch) == gen {
				h.tags[tag] = struct{}{}
				cs.mu.Unlock()
				return h, nil
			}
		}
	}
	cs.mu.Unlock()
	ch, err := cs.conn.NewChannel(ctx)
	if err != nil {
		return nil, err
	}
	h := &sharedChannel{ch: ch, dedicated: dedicated, tags: map[string]struct{}{tag: {}}}
	cs.mu.Lock()
	cs.channels = append(cs.channels, h)
	cs.mu.Unlock()
	return h, nil
}

// release gives a consumer's place back; the last consumer of a channel
// closes it. The acks held on the channel go out first: a consumer that
// left has settled what it took, and its Stop or Pause returns with those
// settlements sent.
func (cs *channelSet) release(h *sharedChannel, tag string) {
	cs.mu.Lock()
	delete(h.tags, tag)
	empty := len(h.tags) == 0
	if empty {
		for i, x := range cs.channels {
			if x == h {
				cs.channels = append(cs.channels[:i], cs.channels[i+1:]...)
				break
			}
		}
	}
	cs.mu.Unlock()
	if !empty {
		h.acks.flush()
		return
	}
	h.acks.close()
	connx.Go(cs.conn, func() { _ = h.ch.Close() })
}

// flushAcks sends the acks every consumer channel holds: the connection is
// closing, and a held ack lost with it would have its message redelivered.
func (cs *channelSet) flushAcks() {
	cs.mu.Lock()
	channels := slices.Clone(cs.channels)
	cs.mu.Unlock()
	for _, h := range channels {
		h.acks.flush()
	}
}

// subscribe starts a consumer on a shared channel: basic.qos (when its prefetch
// differs from the channel's last) and basic.consume.
func (cs *channelSet) subscribe(ctx context.Context, s ConsumerSpec) (*subscription, error) {
	h, err := cs.place(ctx, s.Tag, s.ownChannel())
	if err != nil {
		return nil, err
	}
	h.callMu.Lock()
	want := [2]int{s.PrefetchCount, s.PrefetchSize}
	if !h.qosSet || h.prefetch != want {
		if err = h.ch.Qos(ctx, s.PrefetchCount, s.PrefetchSize, false); err == nil {
			h.prefetch, h.qosSet = want, true
		}
	}
	var msgs <-chan amqp.Delivery
	if err == nil {
		msgs, err = h.ch.Consume(ctx, s.Queue, s.Tag, s.AutoAck, s.Exclusive, false, s.args())
	}
	h.callMu.Unlock()
	if err != nil {
		cs.release(h, s.Tag)
		return nil, err
	}
	return &subscription{channel: h, tag: s.Tag, msgs: msgs}, nil
}

// subscribeMany starts consumers together (a restore run, Apply): they
// are dealt onto new channels, perChannel to a channel (those with a
// channel of their own alone), and each channel opens, sets qos, sends every
// basic.consume without waiting for its reply and waits once, the channels
// side by side (channelsAtOnce at a time), so that N consumers cost a few
// round trips, not N. subs[i] is nil for a consumer whose channel failed (a
// channel that could not open, or a consume the broker refused): the caller
// subscribes those one at a time.
func (cs *channelSet) subscribeMany(ctx context.Context, specs []ConsumerSpec) []*subscription {
	subs := make([]*subscription, len(specs))
	var groups [][]int
	var shared []int
	for i, s := range specs {
		if s.ownChannel() {
			groups = append(groups, []int{i})
			continue
		}
		if shared = append(shared, i); len(shared) == cs.perChannel {
			groups = append(groups, shared)
			shared = nil
		}
	}
	if len(shared) > 0 {
		groups = append(groups, shared)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, channelsAtOnce)
	for _, idx := range groups {
		sem <- struct{}{}
		wg.Add(1)
		go func() { // waited for below: owned by this call
			defer func() { <-sem; wg.Done() }()
			cs.subscribeGroup(ctx, specs, idx, subs)
		}()
	}
	wg.Wait()
	return subs
}

// channelsAtOnce bounds how many shared channels subscribeMany sets up at once.
const channelsAtOnce = 16

// subscribeGroup opens a shared channel for the consumers idx and subscribes them
// there, filling subs.
func (cs *channelSet) subscribeGroup(ctx context.Context, specs []ConsumerSpec, idx []int, subs []*subscription) {
	ch, err := cs.conn.NewChannel(ctx)
	if err != nil {
		return
	}
	h := &sharedChannel{ch: ch, dedicated: len(idx) == 1 && specs[idx[0]].ownChannel(), tags: make(map[string]struct{}, len(idx))}
	for _, i := range idx {
		h.tags[specs[i].Tag] = struct{}{}
	}
	cs.mu.Lock()
	cs.channels = append(cs.channels, h)
	cs.mu.Unlock()
	// Every basic.qos and basic.consume of the group goes out in one
	// bounded call: one goroutine and one timer for the group, where a
	// call each made a restore of 10,000 consumers start 10,000 of each
	// (issue 33: restore at N=10,000). What it sets up comes back on got,
	// so that a call abandoned at its bound shares no memory with this
	// one.
	type setUp struct {
		msgs     []<-chan amqp.Delivery
		prefetch int
	}
	got := make(chan setUp, 1)
	h.callMu.Lock()
	_ = connx.Call(h.ch, ctx, func(c *amqp.Channel) error {
		res := setUp{msgs: make([]<-chan amqp.Delivery, 0, len(idx)), prefetch: -1}
		defer func() { got <- res }()
		for _, i := range idx {
			s := specs[i]
			if res.prefetch != s.PrefetchCount {
				// A prefetch size is refused by ConsumerSpec.Validate.
				if err := c.Qos(s.PrefetchCount, 0, false); err != nil {
					return err
				}
				res.prefetch = s.PrefetchCount
			}
			msgs, err := c.Consume(s.Queue, s.Tag, s.AutoAck, s.Exclusive, false, true, s.args())
			if err != nil {
				return err
			}
			res.msgs = append(res.msgs, msgs)
		}
		return nil
	})
	select {
	case res := <-got:
		if res.prefetch >= 0 {
			h.prefetch, h.qosSet = [2]int{res.prefetch, 0}, true
		}
		for k, msgs := range res.msgs {
			i := idx[k]
			subs[i] = &subscription{channel: h, tag: specs[i].Tag, msgs: msgs}
		}
	default: // abandoned at its bound: the channel is closing
	}
	h.callMu.Unlock()
	if barrier(ctx, h.ch) != nil {
		for _, i := range idx {
			subs[i] = nil
		}
	}
	for _, i := range idx {
		if subs[i] == nil {
			cs.release(h, specs[i].Tag)
		}
	}
}

// ConsumerChannels is how many channels the connection's consumers use now.
func (r *Registry) ConsumerChannels() int {
	r.channels.mu.Lock()
	defer r.channels.mu.Unlock()
	return len(r.channels.channels)
}
