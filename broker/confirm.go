package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/headers"
)

// outcome is what became of a confirmed publish.
type outcome int

const (
	// pending: the broker has not answered yet.
	pending outcome = iota
	// acked: the broker took responsibility for the message.
	acked
	// nacked: the broker refused the message (basic.nack: a queue's
	// reject-publish overflow, an internal error).
	nacked
	// returned: a mandatory message reached no queue (basic.return, then
	// its ack).
	returned
	// lost: the channel or its connection closed before the broker
	// answered. Whether the broker took the message is unknown (PITFALLS 5);
	// the channel's Err says why the channel closed.
	lost
)

var outcomeNames = [...]string{"pending", "acked", "nacked", "returned", "lost"}

func (o outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(?)"
}

// confirmChannel is a channel in publisher-confirm mode: every publish
// returns a confirmation that the broker's ack, nack or return settles. It is
// the one confirm primitive of warren (the topology operations and the
// Publisher both publish through it). Safe for concurrent use; publishes are
// written in the order Publish is called.
type confirmChannel struct {
	ch *conn.Channel
	// c is the connection ch is on; timeout bounds the wait for a
	// confirmation amqp091 should have settled already.
	c       *conn.Conn
	timeout time.Duration

	// pubMu serialises publishing, so sequence numbers follow the order of
	// the writes and of the mandatory queue.
	pubMu sync.Mutex

	returns <-chan amqp.Return
	mu      sync.Mutex
	// queue hands mandatory publishes to watchReturns in sequence order
	// (appended under pubMu). A slice, not a channel: appending never
	// blocks, whatever watchReturns is doing.
	queue   []*confirmation
	stopped bool          // watchReturns takes no more: the channel is gone
	kick    chan struct{} // a non-empty queue, for watchReturns
	ended   chan struct{}
	// unsettled counts the mandatory publishes not yet settled, by
	// returnKey: a publish whose key no other unsettled publish has goes
	// out without any header of warren's, and its return is found by its
	// key alone (see Publish).
	unsettled map[string]int
	// onReturn, when set, is handed every basic.return (on watchReturns'
	// goroutine; it must not block), and mandatory publishes are settled
	// like the others, by their confirm alone: their caller tells its own
	// messages' returns apart (a request by its correlation id), so
	// nothing is queued for watchReturns, which then wakes only for a
	// return.
	onReturn func(amqp.Return)
}

// confirmation is the future of one confirmed publish.
type confirmation struct {
	ch  *confirmChannel
	dc  *amqp.DeferredConfirmation
	seq uint64
	// key is the mandatory publish's returnKey; tagged marks one that
	// carries headers.PublishSeq because another unsettled publish had
	// the same key when it was written.
	key    string
	tagged bool

	// With mandatory, watchReturns settles it (done, outcome, ret).
	done    chan struct{}
	outcome outcome
	ret     *amqp.Return
}

// Done is closed once the outcome is known.
func (c *confirmation) Done() <-chan struct{} {
	if c.done != nil {
		return c.done
	}
	return c.dc.Done()
}

// Outcome is pending until Done is closed, then final.
func (c *confirmation) Outcome() outcome {
	select {
	case <-c.Done():
	default:
		return pending
	}
	if c.done != nil {
		return c.outcome
	}
	return c.ch.result(c.dc)
}

// Return is the broker's basic.return of a returned message, nil otherwise.
func (c *confirmation) Return() *amqp.Return {
	if c.Outcome() != returned {
		return nil
	}
	return c.ret
}

// newConfirmChannel opens a channel in publisher-confirm mode, waiting for
// Connected, bounded by ctx. confirm.select is bounded like channel.open
// (ctx and OperationTimeout), and when the connection dies between the two
// calls it starts over on the next connection: a caller never gets an error
// only because a drop fell between opening a channel and switching it to
// confirms. The caller closes it. Errors: as Channel.
//
// onReturn, when not nil, takes every basic.return instead of Publish's
// confirmations (see confirmChannel.onReturn).
func newConfirmChannel(ctx context.Context, c *conn.Conn, timeout time.Duration, onReturn func(amqp.Return)) (*confirmChannel, error) {
	for {
		ch, err := c.NewChannel(ctx)
		if err != nil {
			return nil, err
		}
		err = connx.Call(ch, ctx, func(ac *amqp.Channel) error { return ac.Confirm(false) })
		if err == nil {
			cc := &confirmChannel{
				ch: ch, c: c, timeout: timeout,
				// Buffered generously and drained by a goroutine that never
				// blocks on us, so amqp091's reader never waits (PITFALLS 1).
				returns:   connx.Raw(ch).NotifyReturn(make(chan amqp.Return, 256)),
				kick:      make(chan struct{}, 1),
				ended:     make(chan struct{}),
				unsettled: map[string]int{},
				onReturn:  onReturn,
			}
			if !connx.Go(c, cc.watchReturns) {
				_ = ch.Close()
				return nil, errors.Join(conn.ErrClosed, c.Err())
			}
			return cc, nil
		}
		_ = ch.Close()
		if ctx.Err() != nil || !connx.LostWith(ch, err) {
			return nil, err
		}
	}
}

// Channel is the underlying channel (its Done, Err).
func (cc *confirmChannel) Channel() *conn.Channel { return cc.ch }

// IsOpen reports whether the channel takes publishes.
func (cc *confirmChannel) IsOpen() bool { return cc.ch.IsOpen() }

// Close closes the channel (every pending confirmation becomes lost) and
// waits for its returns watcher.
func (cc *confirmChannel) Close() error {
	err := cc.ch.Close()
	select {
	case <-cc.ended:
	case <-cc.c.Done():
	}
	return err
}

// errNotConfirming: amqp091 gave no confirmation for a publish (the channel
// is not in confirm mode); never report such a publish as confirmed.
var errNotConfirming = errors.New("broker: channel gave no confirmation")

// Publish writes one message and returns its confirmation. It waits while
// the connection is blocked, bounded by ctx (ErrBlocked). A write that fails
// returns the error (the message was not sent, or not whole; a socket error
// marks the connection lost). With mandatory, a message that reaches no
// queue is Returned; on a channel with onReturn, its return goes there and
// its confirmation is the ack that follows it.
//
// A basic.return carries no delivery tag, only the message as it was
// published (PITFALLS 6). Returns come in the order of the publishes, each
// before its message's ack, so a return is the publish's whose exchange,
// routing key and message id it repeats, as long as no other unsettled
// publish has the same three. Only when one has does the message carry
// headers.PublishSeq (a string, readable by any consumer) to tell them apart:
// a message is never sent with a header of warren's it does not need.
func (cc *confirmChannel) Publish(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing) (*confirmation, error) {
	if err := cc.ch.WaitUnblocked(ctx); err != nil {
		return nil, err
	}
	cc.pubMu.Lock()
	defer cc.pubMu.Unlock()
	var seq uint64
	var rk string
	tagged := false
	watched := mandatory && cc.onReturn == nil // settled by watchReturns
	if watched {
		seq = connx.Raw(cc.ch).GetNextPublishSeqNo()
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
	// ctx is asked for its Err, not given to amqp091, whose publish
	// selects on its Done: that would arm the timer of a call's context
	// (internal/lazyctx), which a publish that ends in time never needs.
	var dc *amqp.DeferredConfirmation
	err := ctx.Err()
	if err == nil {
		dc, err = connx.Raw(cc.ch).PublishWithDeferredConfirmWithContext(context.Background(), exchange, key, mandatory, false, msg)
	}
	if err == nil && dc == nil {
		err = errNotConfirming
	}
	if err != nil {
		if watched {
			cc.release(rk)
		}
		connx.LostWith(cc.ch, err)
		return nil, err
	}
	c := &confirmation{ch: cc, dc: dc, seq: seq, key: rk, tagged: tagged}
	if !watched {
		return c, nil
	}
	c.done = make(chan struct{})
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.stopped {
		// The channel died under us: the message may or may not have
		// arrived.
		c.outcome = lost
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
func (cc *confirmChannel) release(rk string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.releaseLocked(rk)
}

func (cc *confirmChannel) releaseLocked(rk string) {
	if n := cc.unsettled[rk]; n > 1 {
		cc.unsettled[rk] = n - 1
	} else {
		delete(cc.unsettled, rk)
	}
}

// result is a settled non-mandatory message's outcome.
func (cc *confirmChannel) result(dc *amqp.DeferredConfirmation) outcome {
	if dc.Acked() {
		return acked
	}
	if connx.Raw(cc.ch).IsClosed() || connx.ConnectionLost(cc.ch) {
		// amqp091 nacks every pending confirm of a channel that is going
		// away: the client giving up, not the broker refusing (PITFALLS 5).
		// It marks the channel closed before it does so.
		return lost
	}
	return nacked
}

// take returns what was queued; with stop, it also closes the queue.
func (cc *confirmChannel) take(stop bool) []*confirmation {
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
func (cc *confirmChannel) watchReturns() {
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
	settle := func(c *confirmation) {
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
		if found && c.outcome == acked {
			c.outcome, c.ret = returned, &r
		}
		cc.release(c.key)
		close(c.done)
	}
	var fifo []*confirmation
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
			if cc.onReturn != nil {
				cc.onReturn(r)
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
		case <-time.After(cc.timeout):
			// Never expected; a confirmation amqp091 forgot is unknown.
		}
		settle(c)
	}
}
