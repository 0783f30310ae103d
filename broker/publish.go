package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/lazyctx"
)

// Outgoing is one message for PublishAll.
type Outgoing struct {
	// Ctx bounds this message alone (Watermill's per-message context): when
	// it ends first, this message fails with its error and the others go
	// on. Nil: only PublishAll's ctx.
	Ctx        context.Context
	Exchange   string
	RoutingKey string
	// Mandatory asks the broker to return the message when no queue gets
	// it; it then fails with ErrUnroutable.
	Mandatory bool
	Msg       amqp.Publishing
}

func (m *Outgoing) destination() string {
	return fmt.Sprintf("to %s key %q", display(m.Exchange), m.RoutingKey)
}

// PublishOptions shape Ops.Publish.
type PublishOptions struct {
	// Mandatory asks the broker to return the message when no queue gets
	// it; Publish then fails with ErrUnroutable.
	Mandatory bool
}

// Publish publishes one message and waits for the broker's confirm: it is
// PublishAll with one message, bounded by ctx or the Ops timeout.
func (o *Ops) Publish(ctx context.Context, exchange, routingKey string, msg amqp.Publishing, p PublishOptions) error {
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	return o.PublishAll(ctx, []Outgoing{{Exchange: exchange, RoutingKey: routingKey, Mandatory: p.Mandatory, Msg: msg}})[0]
}

// PublishAll publishes every message on the Ops' confirm channels, writing
// them all before it waits for their confirms, and returns one error per
// message (nil: the broker confirmed it). It is warren's one confirm path:
// the Publisher, relays and replies publish through it.
//
//   - A nack fails the message with ErrNacked; a mandatory message that
//     reached no queue with ErrUnroutable.
//   - A destination the broker would refuse is refused before it is
//     written where it could cost other messages their confirms: exchanges
//     the registry did not declare on this connection are checked once
//     (passively) and a missing one fails its messages with the 404
//     (*conn.RefusedError, conn.ErrNotFound); internal exchanges fail with
//     conn.ErrAccessRefused; once the broker's maximum message size is known,
//     larger messages fail with *MessageTooLargeError.
//   - When the broker refuses a message anyway (the channel closed with 403,
//     404, 405 or 406), the refused messages fail at once with that error.
//     The others on the channel lost their confirms with it and are sent
//     again: those written after the refused one never arrived; those
//     before it may have, and may arrive twice. A refusal that cannot be
//     told apart by the broker's text sends the rest one at a time on a
//     channel of their own, so it fails only the message that causes it.
//   - A confirm lost in a connection drop is unknown (PITFALLS 5): the
//     message is sent again after the reconnect (at-least-once).
//   - ctx (and each message's Ctx) bounds the whole: a message not
//     confirmed when it ends fails with the ctx error. Its fate is unknown.
func (o *Ops) PublishAll(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	todo := make([]int, 0, len(msgs))
	limit := o.reg.messageLimit()
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Ctx != nil && m.Ctx.Err() != nil:
			errs[i] = fmt.Errorf("broker: publish %s: %w", m.destination(), m.Ctx.Err())
		case limit > 0 && len(m.Msg.Body) > limit:
			errs[i] = &MessageTooLargeError{Size: len(m.Msg.Body), Limit: limit}
		default:
			todo = append(todo, i)
		}
	}
	todo = o.verifyDestinations(ctx, msgs, todo, errs)
	isolate := false
	for len(todo) > 0 {
		if ctx.Err() != nil {
			for _, i := range todo {
				errs[i] = fmt.Errorf("broker: publish %s: not confirmed: %w", msgs[i].destination(), ctx.Err())
			}
			break
		}
		if isolate {
			todo = o.publishIsolated(ctx, msgs, todo, errs)
			continue
		}
		cc, err := o.confirms().get(ctx)
		if err != nil {
			for _, i := range todo {
				errs[i] = fmt.Errorf("broker: publish %s: %w", msgs[i].destination(), err)
			}
			break
		}
		again, refusal := o.publishOn(ctx, cc, msgs, todo, errs)
		if refusal != nil {
			var attributed bool
			again, attributed = o.attribute(refusal, msgs, again, errs)
			if !attributed {
				o.cfg.Logger.Warn("broker: the broker refused a publish; sending the rest one at a time to find it", "code", refusal.Code, "reason", refusal.Reason)
				isolate = true
			}
		}
		if len(again) > 0 {
			o.cfg.Logger.Warn("broker: sending again messages whose confirm was lost", "count", len(again))
		}
		todo = again
	}
	return errs
}

// verifyDestinations keeps messages off shared confirm channels when their
// exchange may not exist (PITFALLS 26): what the registry declared on this
// connection, the default exchange and amq.* exist; anything else is checked
// once per connection with a passive declare, on a channel of its own.
func (o *Ops) verifyDestinations(ctx context.Context, msgs []Outgoing, todo []int, errs []error) []int {
	gen := o.conn.Generation()
	verdict := map[string]error{}
	for _, i := range todo {
		x := msgs[i].Exchange
		if _, seen := verdict[x]; seen || builtIn(x) {
			continue
		}
		known, internal := o.reg.exchangeKnown(x, gen)
		switch {
		case internal:
			verdict[x] = &OperationError{Op: "publish", Entity: msgs[i].destination(), Reason: "internal exchanges take no publishes", Err: conn.ErrAccessRefused}
		case known && gen != 0:
			verdict[x] = nil
		default:
			err := o.reg.checkExchange(ctx, x)
			if err == nil {
				o.reg.markVerified(x, o.conn.Generation())
			} else if errors.Is(err, conn.ErrNotFound) {
				o.reg.exchangeMissing(x)
			}
			verdict[x] = err
		}
	}
	kept := todo[:0]
	for _, i := range todo {
		if err := verdict[msgs[i].Exchange]; err != nil {
			var ce *conn.RefusedError
			if errors.As(err, &ce) {
				err = &conn.RefusedError{Op: "publish", Entity: msgs[i].destination(), Code: ce.Code, Text: ce.Text, Err: ce.Err}
			}
			errs[i] = err
			continue
		}
		kept = append(kept, i)
	}
	return kept
}

// publishOn writes every message of todo on cc, then waits for their
// confirms. It returns the messages to send again (write failed, or confirm
// lost with the channel) and, when the broker closed the channel with a
// channel-level refusal, that refusal.
func (o *Ops) publishOn(ctx context.Context, cc *confirmChannel, msgs []Outgoing, todo []int, errs []error) ([]int, *amqp.Error) {
	confs := make([]*confirmation, len(todo))
	var again []int
	for j, i := range todo {
		m := &msgs[i]
		c, err := cc.Publish(ctx, m.Exchange, m.RoutingKey, m.Mandatory, m.Msg)
		if err != nil {
			if errors.Is(err, conn.ErrBlocked) || ctx.Err() != nil {
				errs[i] = fmt.Errorf("broker: publish %s: %w", m.destination(), err)
				continue
			}
			again = append(again, i) // the channel or connection died under the write
			continue
		}
		confs[j] = c
	}
	for j, i := range todo {
		c := confs[j]
		if c == nil {
			continue
		}
		m := &msgs[i]
		if _, err := awaitConfirm(ctx, c, m, nil); err != nil {
			errs[i] = err
			continue
		}
		var lost bool
		if errs[i], lost = settled(c, m); lost {
			again = append(again, i)
		}
	}
	slices.Sort(again) // failed writes and lost confirms: resend in order
	if len(again) == 0 {
		return nil, nil
	}
	return again, refusalOf(cc.Channel())
}

// awaitConfirm waits for c, m's confirmation, or for replied to close
// (nil: never), bounded by ctx and m.Ctx: the error of the one that ended
// first, else whether replied closed before c was done. A call's context
// (internal/lazyctx) is waited on through Until and m.Ctx through Also,
// which leave their timers unarmed (m.Ctx is often a consumed message's).
func awaitConfirm(ctx context.Context, c *confirmation, m *Outgoing, replied <-chan struct{}) (repliedFirst bool, err error) {
	done, ring := lazyctx.Until(ctx)
	own, ownRing := lazyctx.Also(ctx, m.Ctx)
	for {
		select {
		case <-c.Done():
			return false, nil
		case <-replied:
			return true, nil
		case <-own:
			return false, fmt.Errorf("broker: publish %s: not confirmed: %w", m.destination(), m.Ctx.Err())
		case <-done:
			return false, fmt.Errorf("broker: publish %s: not confirmed: %w", m.destination(), ctx.Err())
		case <-ring:
		case <-ownRing:
		}
		// A ring: one of the deadlines may be due.
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("broker: publish %s: not confirmed: %w", m.destination(), err)
		}
		if m.Ctx != nil && m.Ctx.Err() != nil {
			return false, fmt.Errorf("broker: publish %s: not confirmed: %w", m.destination(), m.Ctx.Err())
		}
		done, ring = lazyctx.Until(ctx)
		own, ownRing = lazyctx.Also(ctx, m.Ctx)
	}
}

// settled is the error of m's confirmation once it is done: nil when the
// broker acked it, ErrNacked, ErrUnroutable; lost when its confirm went with
// the channel (the message may or may not have arrived).
func settled(c *confirmation, m *Outgoing) (err error, lost bool) {
	switch c.Outcome() {
	case acked:
		return nil, false
	case nacked:
		return fmt.Errorf("%w: %s", ErrNacked, m.destination()), false
	case returned:
		return returnedError(c.Return()), false
	default: // lost
		return nil, true
	}
}

// returnedError is the error of a mandatory message the broker returned.
func returnedError(r *amqp.Return) error {
	return fmt.Errorf("%w: %d %s (exchange %q, key %q)", ErrUnroutable, r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
}

// closeReasonWait bounds refusalOf's wait for a closed channel's reason: it
// comes with the channel.close the broker already sent, in microseconds.
const closeReasonWait = time.Second

// refusalOf is the broker's channel-level refusal that closed ch while its
// connection stayed up, nil otherwise.
func refusalOf(ch *conn.Channel) *amqp.Error {
	if ch.IsOpen() {
		return nil
	}
	// Done fires once the close reason is recorded; amqp091 marks the
	// channel closed a moment before it tells anyone why.
	select {
	case <-ch.Done():
	case <-time.After(closeReasonWait):
	}
	var ae *amqp.Error
	if !errors.As(ch.Err(), &ae) || !ae.Server || !isChannelLevel(ae.Code) || connx.ConnectionLost(ch) {
		return nil
	}
	return ae
}

// publishIsolated sends messages one at a time, each on a confirm channel
// nobody else uses, so a refusal fails exactly the message that caused it.
// It returns what must go again (lost in a connection drop).
func (o *Ops) publishIsolated(ctx context.Context, msgs []Outgoing, todo []int, errs []error) []int {
	var again []int
	var cc *confirmChannel
	defer func() {
		if cc != nil {
			_ = cc.Close()
		}
	}()
	for n, i := range todo {
		if cc == nil || !cc.IsOpen() {
			var err error
			if cc, err = newConfirmChannel(ctx, o.conn, o.cfg.Timeout, nil); err != nil {
				for _, k := range todo[n:] {
					errs[k] = fmt.Errorf("broker: publish %s: %w", msgs[k].destination(), err)
				}
				return again
			}
		}
		lost, refusal := o.publishOn(ctx, cc, msgs, []int{i}, errs)
		switch {
		case refusal != nil:
			m := &msgs[i]
			errs[i] = o.refused(m, refusal)
		case len(lost) > 0:
			again = append(again, lost...)
		}
	}
	return again
}
