package conn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/headers"
)

// Outcome is what became of a confirmed publish.
type Outcome int

const (
	// Pending: the broker has not answered yet.
	Pending Outcome = iota
	// Acked: the broker took responsibility for the message.
	Acked
	// Nacked: the broker refused the message (basic.nack: a queue's
	// reject-publish overflow, an internal error).
	Nacked
	// Returned: a mandatory message reached no queue (basic.return, then
	// its ack).
	Returned
	// Lost: the channel or its connection closed before the broker
	// answered. Whether the broker took the message is unknown (PITFALLS 5);
	// Channel.Err says why the channel closed.
	Lost
)

var outcomeNames = [...]string{"pending", "acked", "nacked", "returned", "lost"}

func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(?)"
}

// ConfirmChannel is a channel in publisher-confirm mode: every Publish
// returns a Confirmation that the broker's ack, nack or return settles. It is
// the one confirm primitive of warren (the topology operations and the
// Publisher both publish through it). Safe for concurrent use; publishes are
// written in the order Publish is called.
type ConfirmChannel struct {
	ch *Channel

	// pubMu serialises publishing, so sequence numbers follow the order of
	// the writes and of the mandatory queue.
	pubMu sync.Mutex

	returns <-chan amqp.Return
	mu      sync.Mutex
	// queue hands mandatory publishes to watchReturns in sequence order
	// (appended under pubMu). A slice, not a channel: appending never
	// blocks, whatever watchReturns is doing.
	queue   []*Confirmation
	stopped bool          // watchReturns takes no more: the channel is gone
	kick    chan struct{} // a non-empty queue, for watchReturns
	ended   chan struct{}
	// unsettled counts the mandatory publishes not yet settled, by
	// returnKey: a publish whose key no other unsettled publish has goes
	// out without any header of warren's, and its return is found by its
	// key alone (see Publish).
	unsettled map[string]int
}

// Confirmation is the future of one confirmed publish.
type Confirmation struct {
	ch   *ConfirmChannel
	dc   *amqp.DeferredConfirmation
	seq  uint64
	size int
	// key is the mandatory publish's returnKey; tagged marks one that
	// carries headers.PublishSeq because another unsettled publish had
	// the same key when it was written.
	key    string
	tagged bool

	// With mandatory, watchReturns settles it (done, outcome, ret).
	done    chan struct{}
	outcome Outcome
	ret     *amqp.Return
}

// Done is closed once the outcome is known.
func (c *Confirmation) Done() <-chan struct{} {
	if c.done != nil {
		return c.done
	}
	return c.dc.Done()
}

// Outcome is Pending until Done is closed, then final.
func (c *Confirmation) Outcome() Outcome {
	select {
	case <-c.Done():
	default:
		return Pending
	}
	if c.done != nil {
		return c.outcome
	}
	return c.ch.result(c.dc)
}

// Return is the broker's basic.return of a Returned message, nil otherwise.
func (c *Confirmation) Return() *amqp.Return {
	if c.Outcome() != Returned {
		return nil
	}
	return c.ret
}

// BodySize is the size of the published body.
func (c *Confirmation) BodySize() int { return c.size }

// NewConfirmChannel opens a channel in publisher-confirm mode, waiting for
// Connected, bounded by ctx. confirm.select is bounded like channel.open
// (ctx and OperationTimeout), and when the connection dies between the two
// calls it starts over on the next connection: a caller never gets an error
// only because a drop fell between opening a channel and switching it to
// confirms. The caller closes it. Errors: as Channel.
func (c *Conn) NewConfirmChannel(ctx context.Context) (*ConfirmChannel, error) {
	for {
		ch, err := c.NewChannel(ctx)
		if err != nil {
			return nil, err
		}
		err = ch.call(ctx, func(ac *amqp.Channel) error { return ac.Confirm(false) })
		if err == nil {
			cc := &ConfirmChannel{
				ch: ch,
				// Buffered generously and drained by a goroutine that never
				// blocks on us, so amqp091's reader never waits (PITFALLS 1).
				returns:   ch.ch.NotifyReturn(make(chan amqp.Return, 256)),
				kick:      make(chan struct{}, 1),
				ended:     make(chan struct{}),
				unsettled: map[string]int{},
			}
			if !c.spawn(cc.watchReturns) {
				_ = ch.Close()
				return nil, closedError(c.Err())
			}
			return cc, nil
		}
		_ = ch.Close()
		if ctx.Err() != nil || !ch.LostWith(err) {
			return nil, err
		}
	}
}

// Channel is the underlying channel (its Done, Err, Generation).
func (cc *ConfirmChannel) Channel() *Channel { return cc.ch }

// IsOpen reports whether the channel takes publishes.
func (cc *ConfirmChannel) IsOpen() bool { return cc.ch.IsOpen() }

// Close closes the channel (every pending confirmation becomes Lost) and
// waits for its returns watcher.
func (cc *ConfirmChannel) Close() error {
	err := cc.ch.Close()
	select {
	case <-cc.ended:
	case <-cc.ch.c.done:
	}
	return err
}

// errNotConfirming: amqp091 gave no confirmation for a publish (the channel
// is not in confirm mode); never report such a publish as confirmed.
var errNotConfirming = errors.New("conn: channel gave no confirmation")

// Publish writes one message and returns its Confirmation. It waits while
// the connection is blocked, bounded by ctx (ErrBlocked). A write that fails
// returns the error (the message was not sent, or not whole; a socket error
// marks the connection lost). With mandatory, a message that reaches no
// queue is Returned.
//
// A basic.return carries no delivery tag, only the message as it was
// published (PITFALLS 6). Returns come in the order of the publishes, each
// before its message's ack, so a return is the publish's whose exchange,
// routing key and message id it repeats, as long as no other unsettled
// publish has the same three. Only when one has does the message carry
// headers.PublishSeq (a string, readable by any consumer) to tell them apart:
// a message is never sent with a header of warren's it does not need.
func (cc *ConfirmChannel) Publish(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing) (*Confirmation, error) {
	if err := cc.ch.WaitUnblocked(ctx); err != nil {
		return nil, err
	}
	cc.pubMu.Lock()
	defer cc.pubMu.Unlock()
	var seq uint64
	var rk string
	tagged := false
	if mandatory {
		seq = cc.ch.ch.GetNextPublishSeqNo()
		rk = returnKey(exchange, key, msg.MessageId)
		cc.mu.Lock()
		tagged = cc.unsettled[rk] > 0
		cc.unsettled[rk]++
		cc.mu.Unlock()
		if tagged {
			h := make(amqp.Table, len(msg.Headers)+1)
			for k, v := range msg.Headers {
				h[k] = v
			}
			h[headers.PublishSeq] = strconv.FormatUint(seq, 10)
			msg.Headers = h
		}
	}
	dc, err := cc.ch.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, msg)
	if err == nil && dc == nil {
		err = errNotConfirming
	}
	if err != nil {
		if mandatory {
			cc.release(rk)
		}
		cc.ch.LostWith(err)
		return nil, err
	}
	c := &Confirmation{ch: cc, dc: dc, seq: seq, size: len(msg.Body), key: rk, tagged: tagged}
	if !mandatory {
		return c, nil
	}
	c.done = make(chan struct{})
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.stopped {
		// The channel died under us: the message may or may not have
		// arrived.
		c.outcome = Lost
		cc.releaseLocked(rk)
		close(c.done)
		return c, nil
	}
	cc.queue = append(cc.queue, c)
	select {
	case cc.kick <- struct{}{}:
	default:
	}
	return c, nil
}

// returnKey is what a basic.return repeats of its publish.
func returnKey(exchange, key, messageID string) string {
	return exchange + "\x00" + key + "\x00" + messageID
}

// release forgets one unsettled mandatory publish of key rk.
func (cc *ConfirmChannel) release(rk string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.releaseLocked(rk)
}

func (cc *ConfirmChannel) releaseLocked(rk string) {
	if n := cc.unsettled[rk]; n > 1 {
		cc.unsettled[rk] = n - 1
	} else {
		delete(cc.unsettled, rk)
	}
}

// result is a settled non-mandatory message's outcome.
func (cc *ConfirmChannel) result(dc *amqp.DeferredConfirmation) Outcome {
	if dc.Acked() {
		return Acked
	}
	if cc.ch.ch.IsClosed() || cc.ch.ConnectionLost() {
		// amqp091 nacks every pending confirm of a channel that is going
		// away: the client giving up, not the broker refusing (PITFALLS 5).
		// It marks the channel closed before it does so.
		return Lost
	}
	return Nacked
}

// take returns what was queued; with stop, it also closes the queue.
func (cc *ConfirmChannel) take(stop bool) []*Confirmation {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	q := cc.queue
	cc.queue = nil
	cc.stopped = cc.stopped || stop
	return q
}

// watchReturns settles mandatory messages in sequence order. A basic.return
// precedes the basic.ack of the same message, and amqp091 hands the return
// to the returns channel before it resolves the confirm (PITFALLS 6): so
// when the oldest message's confirm is done, every return sent before it is
// in the channel, and this goroutine, the only one reading it, takes them
// all before it decides. Returns are read at all times, so amqp091's reader
// never waits on them.
//
// A tagged return (headers.PublishSeq) finds its publish by sequence
// number; an untagged one by its returnKey, which no other unsettled
// untagged publish shares (Publish tags every later one while one is
// unsettled), so the oldest untagged return of a key is that publish's.
func (cc *ConfirmChannel) watchReturns() {
	defer close(cc.ended)
	bySeq := map[uint64]amqp.Return{}
	byKey := map[string][]amqp.Return{}
	record := func(r amqp.Return) {
		if v, ok := r.Headers[headers.PublishSeq]; ok {
			if seq, err := strconv.ParseUint(fmt.Sprint(v), 10, 64); err == nil {
				bySeq[seq] = r
				return
			}
		}
		k := returnKey(r.Exchange, r.RoutingKey, r.MessageId)
		byKey[k] = append(byKey[k], r)
	}
	takeReturns := func() {
		for {
			select {
			case r, ok := <-cc.returns:
				if !ok {
					return
				}
				record(r)
			default:
				return
			}
		}
	}
	settle := func(c *Confirmation) {
		c.outcome = cc.result(c.dc)
		var r amqp.Return
		found := false
		if c.tagged {
			r, found = bySeq[c.seq]
			delete(bySeq, c.seq)
		} else if rs := byKey[c.key]; len(rs) > 0 {
			r, found = rs[0], true
			if len(rs) == 1 {
				delete(byKey, c.key)
			} else {
				byKey[c.key] = rs[1:]
			}
		}
		if found && c.outcome == Acked {
			c.outcome, c.ret = Returned, &r
		}
		cc.release(c.key)
		close(c.done)
	}
	var fifo []*Confirmation
	returns := cc.returns
	for returns != nil {
		var oldest <-chan struct{}
		if len(fifo) > 0 {
			oldest = fifo[0].dc.Done()
		}
		select {
		case <-cc.kick:
			fifo = append(fifo, cc.take(false)...)
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
	fifo = append(fifo, cc.take(true)...)
	for _, c := range fifo {
		select {
		case <-c.dc.Done():
		case <-time.After(cc.ch.timeout):
			// Never expected; a confirmation amqp091 forgot is unknown.
		}
		settle(c)
	}
}
