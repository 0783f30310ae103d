package broker

import (
	"context"
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

// hostSet is a connection's channels for consumers.
type hostSet struct {
	conn       *conn.Conn
	perChannel int

	mu    sync.Mutex
	hosts []*host
}

// host is one channel and the consumers on it.
type host struct {
	ch        *conn.Channel
	dedicated bool

	// callMu serialises basic.qos + basic.consume: qos (global false)
	// applies to the consumers started after it on the channel.
	callMu   sync.Mutex
	prefetch [2]int
	qosSet   bool

	tags map[string]struct{} // guarded by hostSet.mu
}

// subscription is one consumer's basic.consume on a host.
type subscription struct {
	host *host
	tag  string
	msgs <-chan amqp.Delivery
}

// place picks a host for a consumer with tag (opening a channel when no
// open one has room), and reserves the tag on it.
func (hs *hostSet) place(ctx context.Context, tag string, dedicated bool) (*host, error) {
	gen := connx.GenerationFor(hs.conn, ctx)
	hs.mu.Lock()
	live := hs.hosts[:0]
	for _, h := range hs.hosts {
		if h.ch.IsOpen() {
			live = append(live, h)
		}
	}
	clear(hs.hosts[len(live):])
	hs.hosts = live
	if !dedicated {
		for _, h := range hs.hosts {
			if _, dup := h.tags[tag]; !dup && !h.dedicated && len(h.tags) < hs.perChannel && connx.ChannelGeneration(h.ch) == gen {
				h.tags[tag] = struct{}{}
				hs.mu.Unlock()
				return h, nil
			}
		}
	}
	hs.mu.Unlock()
	ch, err := hs.conn.NewChannel(ctx)
	if err != nil {
		return nil, err
	}
	h := &host{ch: ch, dedicated: dedicated, tags: map[string]struct{}{tag: {}}}
	hs.mu.Lock()
	hs.hosts = append(hs.hosts, h)
	hs.mu.Unlock()
	return h, nil
}

// release gives a consumer's place back; the last consumer of a channel
// closes it.
func (hs *hostSet) release(h *host, tag string) {
	hs.mu.Lock()
	delete(h.tags, tag)
	empty := len(h.tags) == 0
	if empty {
		for i, x := range hs.hosts {
			if x == h {
				hs.hosts = append(hs.hosts[:i], hs.hosts[i+1:]...)
				break
			}
		}
	}
	hs.mu.Unlock()
	if empty {
		connx.Go(hs.conn, func() { _ = h.ch.Close() })
	}
}

// subscribe starts a consumer on a host: basic.qos (when its prefetch
// differs from the host's last) and basic.consume.
func (hs *hostSet) subscribe(ctx context.Context, s ConsumerSpec) (*subscription, error) {
	h, err := hs.place(ctx, s.Tag, s.ownChannel())
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
		hs.release(h, s.Tag)
		return nil, err
	}
	return &subscription{host: h, tag: s.Tag, msgs: msgs}, nil
}

// subscribeMany starts consumers together (a restore run, Apply): they
// are dealt onto new hosts, perChannel to a channel (those with a channel of their own alone),
// and each host opens its channel, sets qos, sends every basic.consume
// without waiting for its reply and waits once, the hosts side by side
// (hostsAtOnce at a time), so that N consumers cost a few round trips, not
// N. subs[i] is nil for a consumer whose host failed (a channel that could
// not open, or a consume the broker refused): the caller subscribes those
// one at a time.
func (hs *hostSet) subscribeMany(ctx context.Context, specs []ConsumerSpec) []*subscription {
	subs := make([]*subscription, len(specs))
	var groups [][]int
	var shared []int
	for i, s := range specs {
		if s.ownChannel() {
			groups = append(groups, []int{i})
			continue
		}
		if shared = append(shared, i); len(shared) == hs.perChannel {
			groups = append(groups, shared)
			shared = nil
		}
	}
	if len(shared) > 0 {
		groups = append(groups, shared)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, hostsAtOnce)
	for _, idx := range groups {
		sem <- struct{}{}
		wg.Add(1)
		go func() { // waited for below: owned by this call
			defer func() { <-sem; wg.Done() }()
			hs.subscribeGroup(ctx, specs, idx, subs)
		}()
	}
	wg.Wait()
	return subs
}

// hostsAtOnce bounds how many hosts subscribeMany sets up at once.
const hostsAtOnce = 16

// subscribeGroup opens a host for the consumers idx and subscribes them
// there, filling subs.
func (hs *hostSet) subscribeGroup(ctx context.Context, specs []ConsumerSpec, idx []int, subs []*subscription) {
	ch, err := hs.conn.NewChannel(ctx)
	if err != nil {
		return
	}
	h := &host{ch: ch, dedicated: len(idx) == 1 && specs[idx[0]].ownChannel(), tags: make(map[string]struct{}, len(idx))}
	for _, i := range idx {
		h.tags[specs[i].Tag] = struct{}{}
	}
	hs.mu.Lock()
	hs.hosts = append(hs.hosts, h)
	hs.mu.Unlock()
	h.callMu.Lock()
	for _, i := range idx {
		s := specs[i]
		want := [2]int{s.PrefetchCount, s.PrefetchSize}
		if !h.qosSet || h.prefetch != want {
			if err := h.ch.Qos(ctx, s.PrefetchCount, s.PrefetchSize, false); err != nil {
				break
			}
			h.prefetch, h.qosSet = want, true
		}
		msgs, err := h.ch.Consume(ctx, s.Queue, s.Tag, s.AutoAck, s.Exclusive, true, s.args())
		if err != nil {
			break
		}
		subs[i] = &subscription{host: h, tag: s.Tag, msgs: msgs}
	}
	h.callMu.Unlock()
	if barrier(ctx, h.ch) != nil {
		for _, i := range idx {
			subs[i] = nil
		}
	}
	for _, i := range idx {
		if subs[i] == nil {
			hs.release(h, specs[i].Tag)
		}
	}
}

// ConsumerChannels is how many channels the connection's consumers use now.
func (r *Registry) ConsumerChannels() int {
	r.hosts.mu.Lock()
	defer r.hosts.mu.Unlock()
	return len(r.hosts.hosts)
}
