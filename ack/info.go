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
}

// state is shared by every copy of a message's context, so a disposition set
// by a middleware is seen by the subscriber that settles the message.
type state struct {
	info Info
	mu   sync.Mutex
	disp Disposition
	why  error
}

type stateKey struct{}

// NewContext returns ctx carrying info and a fresh disposition slot. The
// Subscriber calls it for every delivery.
func NewContext(ctx context.Context, info Info) context.Context {
	return context.WithValue(ctx, stateKey{}, &state{info: info})
}

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
	if s == nil {
		return Info{}, false
	}
	return s.info, true
}

// Track gives msg a disposition slot when it has none (messages of other
// Pub/Subs, or built in tests), so that Set and Get work on it. It returns
// msg.
func Track(msg *message.Message) *message.Message {
	if stateOf(msg) == nil {
		msg.SetContext(context.WithValue(msg.Context(), stateKey{}, &state{}))
	}
	return msg
}
