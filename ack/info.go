package ack

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Info is what the broker said about a delivery.
type Info struct {
	DeliveryTag uint64
	Redelivered bool
	Exchange    string
	RoutingKey  string
	Queue       string
	ConsumerTag string
	// Headers are the raw AMQP headers, values of every AMQP type
	// (x-death is a []any of tables); metadata shows them as strings.
	Headers map[string]any
	// Generation is the connection generation the delivery came on.
	Generation uint64
	// PreviousAttempts is how many times the handler ran on this message
	// before this delivery, as far as the Subscriber knows (see
	// PreviousAttempts and Attempt).
	PreviousAttempts int
}

// state is shared by every copy of a message's context, so a disposition set
// by a middleware is seen by the subscriber that settles the message, and an
// in-process retry counted by one is seen by all.
type state struct {
	info     Info
	hasInfo  bool
	mu       sync.Mutex
	previous int
	retries  int
	disp     Disposition
	why      error
}

type stateKey struct{}

// NewContext returns ctx carrying info and a fresh disposition slot. The
// Subscriber calls it for every delivery.
func NewContext(ctx context.Context, info Info) context.Context {
	c := &stateContext{Context: ctx}
	c.s.info, c.s.hasInfo, c.s.previous = info, true, info.PreviousAttempts
	return c
}

// stateContext carries a message's state in the same allocation as the
// context that holds it: one per delivery instead of two, on the hot path.
type stateContext struct {
	context.Context
	s state
}

func (c *stateContext) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return &c.s
	}
	return c.Context.Value(key)
}

func (c *stateContext) String() string { return "ack.NewContext" }

func stateOf(msg *message.Message) *state {
	if msg == nil {
		return nil
	}
	s, _ := msg.Context().Value(stateKey{}).(*state)
	return s
}

// InfoOf returns the delivery info of msg, false when msg did not come from
// a warren Subscriber.
func InfoOf(msg *message.Message) (Info, bool) {
	s := stateOf(msg)
	if s == nil || !s.hasInfo {
		return Info{}, false
	}
	return s.info, true
}

// Track gives msg a disposition slot and an attempt counter when it has
// none (messages of other Pub/Subs, or built in tests), so that Set, Get
// and NextAttempt work on it; its previous attempts come from AttemptHeader
// in its metadata. It returns msg (nil stays nil).
func Track(msg *message.Message) *message.Message {
	if msg != nil && stateOf(msg) == nil {
		msg.SetContext(context.WithValue(msg.Context(), stateKey{}, &state{previous: metadataAttempts(msg)}))
	}
	return msg
}
