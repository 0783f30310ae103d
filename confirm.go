package warren

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// returnSeqHeader correlates a basic.return with the publish it belongs to
// (the return carries no delivery tag). Set only with Mandatory.
const returnSeqHeader = "warren-publish-seq"

// errUnconfirmed marks a message whose confirm was lost with its channel or
// connection: unknown, not refused (PITFALLS 5), so it is republished.
var errUnconfirmed = errors.New("warren: confirm lost with the channel")

// errNotConfirming: a channel that gave no confirmation for a publish; it
// is replaced and the message sent again.
var errNotConfirming = errors.New("warren: channel is not in confirm mode")

// confirmSlot holds one confirm channel, reopened after it dies.
type confirmSlot struct {
	p  *Publisher
	mu sync.Mutex
	st *confirmChannel
}

func (s *confirmSlot) get(ctx context.Context) (*confirmChannel, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != nil && s.st.ch.IsOpen() {
		return s.st, nil
	}
	if err := s.p.conn.WaitUnblocked(ctx); err != nil {
		return nil, err
	}
	ch, err := s.p.conn.NewConfirmChannel(ctx)
	if err != nil {
		return nil, err
	}
	st := &confirmChannel{ch: ch, log: s.p.cfg.Logger}
	if s.p.cfg.Mandatory {
		st.mandatory = &mandatoryWatch{
			// Buffered generously and drained by a goroutine that never
			// blocks on us, so amqp091's reader never waits (PITFALLS 1).
			returns: ch.NotifyReturn(make(chan amqp.Return, 256)),
			kick:    make(chan struct{}, 1),
			ended:   make(chan struct{}),
		}
		go st.watchReturns()
	}
	s.st = st
	return st, nil
}

func (s *confirmSlot) close() {
	s.mu.Lock()
	st := s.st
	s.st = nil
	s.mu.Unlock()
	if st != nil {
		_ = st.ch.Close()
		if st.mandatory != nil {
			<-st.mandatory.ended
		}
	}
}

// confirmChannel is one confirm-mode channel. Each message's confirm is an
// amqp091 DeferredConfirmation that amqp091's reader goroutine resolves
// itself: a publisher wakes straight from the broker's ack, with no
// goroutine of ours in between (NotifyPublish would add one, and a timer per
// confirm inside amqp091). With Mandatory, one goroutine per channel
// attaches returns to their messages (mandatoryWatch).
type confirmChannel struct {
	ch  *conn.Channel
	log *slog.Logger

	// pubMu serialises publishing, so sequence numbers follow the order of
	// the writes and of mandatory.queue.
	pubMu     sync.Mutex
	mandatory *mandatoryWatch // nil without Mandatory
}

// mandatoryWatch is the state of watchReturns.
type mandatoryWatch struct {
	returns <-chan amqp.Return

	mu sync.Mutex
	// queue hands published messages to watchReturns in sequence order
	// (appended under pubMu). A slice, not a channel: appending never
	// blocks, whatever watchReturns is doing.
	queue []*watchedPublish
	// stopped is set once watchReturns takes no more: the channel is gone,
	// and a message written on it counts as a failed write.
	stopped bool
	kick    chan struct{} // a non-empty queue, for watchReturns
	ended   chan struct{}
}

// add queues w for watchReturns, or reports that it takes no more.
func (m *mandatoryWatch) add(w *watchedPublish) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return false
	}
	m.queue = append(m.queue, w)
	select {
	case m.kick <- struct{}{}:
	default:
	}
	return true
}

// take returns what was queued; with stop, it also closes the queue.
func (m *mandatoryWatch) take(stop bool) []*watchedPublish {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queue
	m.queue = nil
	m.stopped = m.stopped || stop
	return q
}

// watchedPublish is one mandatory message until watchReturns settles it.
type watchedPublish struct {
	seq  uint64
	dc   *amqp.DeferredConfirmation
	done chan struct{}
	err  error
}

// pendingConfirm is what a publisher waits on for one message.
type pendingConfirm struct {
	dc    *amqp.DeferredConfirmation
	watch *watchedPublish // with Mandatory
}

func (p pendingConfirm) done() <-chan struct{} {
	if p.watch != nil {
		return p.watch.done
	}
	return p.dc.Done()
}

// publishBatch writes every message of todo, then waits for their confirms.
// It returns the indexes to publish again (written on a channel that died,
// or confirm lost with it).
func (c *confirmChannel) publishBatch(ctx context.Context, r Route, pubs []amqp.Publishing, todo []int, results []error) []int {
	if err := c.ch.WaitUnblocked(ctx); err != nil {
		for _, i := range todo {
			results[i] = err
		}
		return nil
	}
	waits := make([]pendingConfirm, len(todo))
	var again []int
	c.pubMu.Lock()
	for j, i := range todo {
		w, err := c.publishOne(ctx, r, pubs[i])
		if err != nil {
			// A socket error marks the connection lost now, so the retry
			// waits for the next one instead of reusing this channel.
			c.ch.LostWith(err)
			c.log.Warn("warren: publish write failed; the message will be sent again", "err", err)
			again = append(again, i)
			continue
		}
		waits[j] = w
	}
	c.pubMu.Unlock()
	for j, i := range todo {
		w := waits[j]
		if w.dc == nil {
			continue
		}
		select {
		case <-w.done():
		case <-ctx.Done():
			// Stop waiting; the rest resolve with nobody reading them.
			// Failed writes already in again are unsent: they time out too.
			for _, i := range append(again, todo[j:]...) {
				results[i] = fmt.Errorf("%w: %w", ErrPublishTimeout, ctx.Err())
			}
			return nil
		}
		err := c.outcome(w)
		if errors.Is(err, errUnconfirmed) {
			again = append(again, i)
			continue
		}
		results[i] = err
	}
	slices.Sort(again) // failed writes and lost confirms: resend in order
	if len(again) > 0 && ctx.Err() != nil {
		for _, i := range again {
			results[i] = fmt.Errorf("%w: %w", ErrPublishTimeout, errUnconfirmed)
		}
		return nil
	}
	return again
}

// publishOne writes one message; pubMu is held.
func (c *confirmChannel) publishOne(ctx context.Context, r Route, pub amqp.Publishing) (pendingConfirm, error) {
	m := c.mandatory
	if m == nil {
		dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, r.Exchange, r.RoutingKey, false, false, pub)
		if err == nil && dc == nil {
			// amqp091 gives no confirmation outside confirm mode; never
			// report such a publish as confirmed.
			err = errNotConfirming
		}
		return pendingConfirm{dc: dc}, err
	}
	seq := c.ch.GetNextPublishSeqNo()
	h := make(amqp.Table, len(pub.Headers)+1)
	for k, v := range pub.Headers {
		h[k] = v
	}
	h[returnSeqHeader] = int64(seq)
	pub.Headers = h
	dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, r.Exchange, r.RoutingKey, true, false, pub)
	if err == nil && dc == nil {
		err = errNotConfirming
	}
	if err != nil {
		return pendingConfirm{}, err
	}
	w := &watchedPublish{seq: seq, dc: dc, done: make(chan struct{})}
	if !m.add(w) {
		// The channel died under us; whether the broker took the message
		// is unknown, so it is sent again.
		return pendingConfirm{}, errUnconfirmed
	}
	return pendingConfirm{dc: dc, watch: w}, nil
}

// outcome is a settled message's result.
func (c *confirmChannel) outcome(w pendingConfirm) error {
	if w.watch != nil {
		return w.watch.err
	}
	return c.confirmResult(w.dc)
}

func (c *confirmChannel) confirmResult(dc *amqp.DeferredConfirmation) error {
	if dc.Acked() {
		return nil
	}
	if !c.ch.IsOpen() || c.ch.ConnectionLost() {
		// amqp091 nacks every pending confirm of a channel that is going
		// away: the client giving up, not the broker refusing (PITFALLS 5).
		return errUnconfirmed
	}
	return ErrNacked
}

// watchReturns settles mandatory messages in sequence order. A basic.return
// precedes the basic.ack of the same message, and amqp091 hands the return
// to the returns channel before it resolves the confirm (PITFALLS 6): so
// when the oldest message's confirm is done, every return sent before it is
// in the channel, and this goroutine, the only one reading it, takes them
// all before it decides. Returns are read at all times, so amqp091's reader
// never waits on them.
func (c *confirmChannel) watchReturns() {
	m := c.mandatory
	defer close(m.ended)
	returned := map[uint64]amqp.Return{}
	record := func(r amqp.Return) {
		if seq, ok := r.Headers[returnSeqHeader].(int64); ok {
			returned[uint64(seq)] = r
		}
	}
	takeReturns := func() {
		for {
			select {
			case r, ok := <-m.returns:
				if !ok {
					return
				}
				record(r)
			default:
				return
			}
		}
	}
	settle := func(w *watchedPublish) {
		w.err = c.confirmResult(w.dc)
		if r, ok := returned[w.seq]; ok {
			delete(returned, w.seq)
			if w.err == nil {
				w.err = fmt.Errorf("%w: %d %s (exchange %q, key %q)", ErrUnroutable, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
			}
		}
		close(w.done)
	}
	var fifo []*watchedPublish
	returns := m.returns
	for returns != nil {
		var oldest <-chan struct{}
		if len(fifo) > 0 {
			oldest = fifo[0].dc.Done()
		}
		select {
		case <-m.kick:
			fifo = append(fifo, m.take(false)...)
		case r, ok := <-returns:
			if !ok {
				returns = nil // amqp091 closed it: the channel is gone
				continue
			}
			record(r)
		case <-oldest:
			takeReturns()
			settle(fifo[0])
			fifo = fifo[1:]
		}
	}
	// The channel is gone and no return can come. Close the queue, then
	// settle what is left: amqp091 nacks their confirms right after it
	// closes the returns channel.
	fifo = append(fifo, m.take(true)...)
	for _, w := range fifo {
		<-w.dc.Done()
		settle(w)
	}
}
