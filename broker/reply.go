package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
)

// directReplyTo is RabbitMQ's direct reply-to pseudo-queue: a reply
// published to it goes straight to the consumer of the channel that
// published the request, with no queue declared and nothing left behind.
const directReplyTo = "amq.rabbitmq.reply-to"

// ReplyChannel publishes requests and receives their replies through
// direct reply-to (amq.rabbitmq.reply-to). The broker delivers a reply only
// to the channel that published its request, so both go through this one
// channel: a confirm channel that consumes the pseudo-queue (auto-ack, as
// the broker requires). When it closes (its connection lost, a refusal),
// Replies is closed and every reply still on its way is gone: open another
// one.
//
// A request is told apart from every other by its correlation id, so the
// return of a mandatory request no queue takes goes to the unroutable
// function given to OpenReplyChannel with that id, instead of through the
// confirm channel's matching of returns to publishes: the channel wakes
// nobody for a request but its reply (or its return) and its confirm.
type ReplyChannel struct {
	ops     *Ops
	cc      *confirmChannel
	replies <-chan amqp.Delivery
}

// errReplyChannelLost: the reply channel closed before the broker
// confirmed the request; whether it arrived is unknown.
var errReplyChannelLost = errors.New("broker: the reply channel closed before the request was confirmed")

// OpenReplyChannel opens a ReplyChannel, waiting for the connection,
// bounded by ctx. The caller closes it. unroutable is called for every
// mandatory request the broker returns, with its correlation id and an
// error matching ErrUnroutable; it runs on the channel's own goroutine
// and must not block.
func (o *Ops) OpenReplyChannel(ctx context.Context, unroutable func(correlationID string, err error)) (*ReplyChannel, error) {
	if unroutable == nil {
		return nil, &conn.ConfigError{Field: "broker.OpenReplyChannel.unroutable", Reason: "must not be nil"}
	}
	cc, err := newConfirmChannel(ctx, o.conn, o.cfg.Timeout, func(r amqp.Return) {
		unroutable(r.CorrelationId, returnedError(&r))
	})
	if err != nil {
		return nil, err
	}
	replies, err := cc.Channel().Consume(ctx, directReplyTo, "", true, true, false, nil)
	if err != nil {
		_ = cc.Close()
		return nil, fmt.Errorf("broker: consume %s: %w", directReplyTo, err)
	}
	return &ReplyChannel{ops: o, cc: cc, replies: replies}, nil
}

// Replies delivers the replies, closed when the channel is.
func (rc *ReplyChannel) Replies() <-chan amqp.Delivery { return rc.replies }

// IsOpen reports whether the channel takes requests.
func (rc *ReplyChannel) IsOpen() bool { return rc.cc.IsOpen() }

// Publish sends one request on the channel, its ReplyTo set to the
// pseudo-queue, and waits for the broker's confirm or for replied to close,
// whichever comes first. The caller closes replied when the request's reply
// (or its return) is in, which proves the broker took the request, while
// the confirm of a persistent request may wait on the broker's disk (or on
// the responder's ack) well after it; or when the channel's replies ended,
// and then the confirm decides. Checks and errors are PublishAll's: a
// destination that may not exist is checked first (a 404 would close the
// channel, and every reply on its way with it), a nacked request fails
// with ErrNacked, a refused one with the refusal, and ctx and m.Ctx bound
// the wait. A mandatory request no queue takes is confirmed too: its
// return goes to OpenReplyChannel's unroutable function, before the
// confirm. Unlike PublishAll it never sends again: a request whose confirm
// was lost with the channel fails (IsOpen is then false), since its reply
// could only have come to this channel.
func (rc *ReplyChannel) Publish(ctx context.Context, m Outgoing, replied <-chan struct{}) error {
	m.Msg.ReplyTo = directReplyTo
	msgs := []Outgoing{m}
	errs := make([]error, 1)
	if limit := rc.ops.reg.messageLimit(); limit > 0 && len(m.Msg.Body) > limit {
		return &MessageTooLargeError{Size: len(m.Msg.Body), Limit: limit}
	}
	if todo := rc.ops.verifyDestinations(ctx, msgs, []int{0}, errs); len(todo) == 0 {
		return errs[0]
	}
	c, err := rc.cc.Publish(ctx, m.Exchange, m.RoutingKey, m.Mandatory, m.Msg)
	if err != nil {
		if errors.Is(err, conn.ErrBlocked) || ctx.Err() != nil {
			return fmt.Errorf("broker: publish %s: %w", m.destination(), err)
		}
		return rc.lost(&m)
	}
	repliedFirst, err := awaitConfirm(ctx, c, &m, replied)
	if err != nil {
		return err
	}
	if repliedFirst {
		if rc.cc.IsOpen() {
			return nil
		}
		// Closed because the channel went, not for a reply: the confirm,
		// which amqp091 settles as the channel closes, says why.
		if _, err := awaitConfirm(ctx, c, &m, nil); err != nil {
			return err
		}
	}
	if err, lost := settled(c, &m); !lost {
		return err
	}
	return rc.lost(&m)
}

// lost is the error of a request whose write failed or whose confirm went
// with the channel: the broker's refusal when it closed the channel, else
// errReplyChannelLost.
func (rc *ReplyChannel) lost(m *Outgoing) error {
	if refusal := refusalOf(rc.cc.Channel()); refusal != nil {
		return rc.ops.refused(m, refusal)
	}
	return fmt.Errorf("%w: publish %s", errReplyChannelLost, m.destination())
}

// Close closes the channel; Replies is closed.
func (rc *ReplyChannel) Close() error { return rc.cc.Close() }
