package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// directReplyTo is RabbitMQ's direct reply-to pseudo-queue: a reply
// published to it goes straight to the consumer of the channel that
// published the request, with no queue declared and nothing left behind.
const directReplyTo = "amq.rabbitmq.reply-to"

// ReplyChannel publishes requests and receives their replies through
// direct reply-to (amq.rabbitmq.reply-to). The broker delivers a reply only to the channel that
// published its request, so both go through this one channel: a confirm
// channel that consumes the pseudo-queue (auto-ack, as the broker requires).
// When it closes (its connection lost, a refusal), Replies is closed and
// every reply still on its way is gone: open another one.
type ReplyChannel struct {
	ops     *Ops
	cc      *confirmChannel
	replies <-chan amqp.Delivery
}

// errReplyChannelLost: the reply channel closed before the broker
// confirmed the request; whether it arrived is unknown.
var errReplyChannelLost = errors.New("broker: the reply channel closed before the request was confirmed")

// OpenReplyChannel opens a ReplyChannel, waiting for the connection,
// bounded by ctx. The caller closes it.
func (o *Ops) OpenReplyChannel(ctx context.Context) (*ReplyChannel, error) {
	cc, err := newConfirmChannel(ctx, o.conn, o.cfg.Timeout)
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
// pseudo-queue, and waits for the broker's confirm, with PublishAll's
// checks and errors: a destination that may not exist is checked first
// (a 404 would close the channel, and every reply on its way with it), a
// mandatory request no queue takes fails with ErrUnroutable, a refused one
// with the refusal. Unlike PublishAll it never sends again: a request whose
// confirm was lost with the channel fails (IsOpen is then false), since
// its reply could only have come to this channel.
func (rc *ReplyChannel) Publish(ctx context.Context, m Outgoing) error {
	m.Msg.ReplyTo = directReplyTo
	msgs := []Outgoing{m}
	errs := make([]error, 1)
	if limit := rc.ops.reg.messageLimit(); limit > 0 && len(m.Msg.Body) > limit {
		return &MessageTooLargeError{Size: len(m.Msg.Body), Limit: limit}
	}
	if todo := rc.ops.verifyDestinations(ctx, msgs, []int{0}, errs); len(todo) == 0 {
		return errs[0]
	}
	lost, refusal := rc.ops.publishOn(ctx, rc.cc, msgs, []int{0}, errs)
	switch {
	case refusal != nil:
		return rc.ops.refused(&msgs[0], refusal)
	case len(lost) > 0:
		return fmt.Errorf("%w: publish %s", errReplyChannelLost, msgs[0].destination())
	}
	return errs[0]
}

// Close closes the channel; Replies is closed.
func (rc *ReplyChannel) Close() error { return rc.cc.Close() }
