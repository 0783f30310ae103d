package broker

import (
	"context"
	"errors"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/topology"
)

func TestConsumerSpecValidation(t *testing.T) {
	tests := []struct {
		name  string
		spec  interface{ Validate() error }
		field string
	}{
		{"consumer ok", ConsumerSpec{Queue: "q", Handler: func(_ context.Context, _ *Delivery) {}}, ""},
		{"consumer nil handler", ConsumerSpec{Queue: "q"}, "Handler"},
		{"consumer no queue", ConsumerSpec{Handler: func(_ context.Context, _ *Delivery) {}}, "Queue"},
		{"consumer prefetch", ConsumerSpec{Queue: "q", Handler: func(_ context.Context, _ *Delivery) {}, PrefetchCount: 70000}, "PrefetchCount"},
		{"consumer handlers", ConsumerSpec{Queue: "q", Handler: func(_ context.Context, _ *Delivery) {}, Handlers: -1}, "Handlers"},
		{"consumer x-priority in args", ConsumerSpec{Queue: "q", Handler: func(_ context.Context, _ *Delivery) {}, Args: amqp.Table{"x-priority": 1}}, "Args"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var se *topology.SpecError
			if !errors.As(err, &se) || se.Field != tt.field || !errors.Is(err, topology.ErrInvalidSpec) {
				t.Fatalf("got %v, want a SpecError on %s", err, tt.field)
			}
		})
	}
}

func TestRegistryForgetsAndReplaces(t *testing.T) {
	r := &Registry{}
	r.putExchange(topology.ExchangeSpec{Name: "x", Type: topology.Direct, AutoDelete: true}, 1)
	r.putExchange(topology.ExchangeSpec{Name: "y", Type: topology.Fanout}, 1)
	r.putQueue(topology.QueueSpec{Name: "q"}, 1)
	r.putQueue(topology.QueueSpec{Name: "q", Durable: true}, 1) // replaces
	r.putBinding(topology.BindSpec{Source: "x", Destination: "q", RoutingKey: "a"}, 1)
	r.putBinding(topology.BindSpec{Source: "y", Destination: "x", Kind: topology.BindExchange}, 1)
	r.putBinding(topology.BindSpec{Source: "y", Destination: "q", RoutingKey: "b"}, 1)
	s := r.Snapshot()
	if len(s.Queues) != 1 || !s.Queues[0].Durable {
		t.Fatalf("redeclare did not replace: %+v", s.Queues)
	}
	if len(s.Bindings) != 3 || s.Bindings[2].Kind != topology.BindExchange {
		t.Fatalf("queue bindings must come before exchange bindings: %+v", s.Bindings)
	}
	// Removing the last binding of an auto-delete exchange forgets it (the
	// broker deletes it) and its remaining bindings.
	r.forgetBinding(topology.BindSpec{Source: "x", Destination: "q", RoutingKey: "a"})
	s = r.Snapshot()
	if len(s.Exchanges) != 1 || s.Exchanges[0].Name != "y" || len(s.Bindings) != 1 {
		t.Fatalf("auto-delete exchange not forgotten: %+v", s)
	}
	r.forgetQueue("q")
	if s = r.Snapshot(); len(s.Queues) != 0 || len(s.Bindings) != 0 {
		t.Fatalf("queue or its bindings not forgotten: %+v", s)
	}
}
