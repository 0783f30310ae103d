package broker_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// Every Ops on a connection shares its one registry: one restore run per
// reconnect covers what all of them declared, in the documented order.
func TestOneRegistryAndOneRestorePerConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, first := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	second, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close(ctxT(t, 10*time.Second)) })
	if first.Registry() != second.Registry() || broker.RegistryOf(c) != first.Registry() {
		t.Fatal("two registries on one connection")
	}
	ctx := ctxT(t, 30*time.Second)
	got := make(chan string, 10)
	// Declared in an order that is not the restore order, by both.
	q1, q2, x := b.Name("q1"), b.Name("q2"), b.Name("x")
	if _, err := first.DeclareQueue(ctx, topology.QueueSpec{Name: q1, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	if err := second.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Direct, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	if err := first.Bind(ctx, topology.BindSpec{Source: x, Destination: q1, RoutingKey: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Consume(ctx, broker.ConsumerSpec{Queue: q1, Handler: receiver(got)}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.DeclareQueue(ctx, topology.QueueSpec{Name: q2, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	reports := restoreReports(t, first)
	before := first.Registry().Restores()
	for round := 1; round <= 3; round++ {
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
		var rep broker.RestoreReport
		select {
		case rep = <-reports:
		case <-time.After(20 * time.Second):
			t.Fatal("no restore run")
		}
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		if n := first.Registry().Restores() - before; n != uint64(round) {
			t.Fatalf("%d restore runs after %d reconnects", n, round)
		}
		if !rep.OK() {
			t.Fatalf("restore failed: %+v", rep)
		}
		var kinds []broker.EntityKind
		for _, e := range rep.Restored {
			kinds = append(kinds, e.Kind)
		}
		want := []broker.EntityKind{broker.KindExchange, broker.KindQueue, broker.KindQueue, broker.KindBinding, broker.KindConsumer}
		if !slices.Equal(kinds, want) {
			t.Fatalf("restore order %v, want %v", kinds, want)
		}
		if err := first.Publish(ctx, x, "k", msg("round"), broker.PublishOptions{Mandatory: true}); err != nil {
			t.Fatal(err)
		}
		expect(t, got, "round")
	}
}

// A second identical declaration is answered by the registry: no network
// call. A conflicting one fails before the network, naming the field.
func TestDeclarationsAreKeyed(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	q := b.Name("keyed")
	spec := topology.QueueSpec{Name: q, Durable: true, Args: topology.QueueArgs{MaxLength: 10}}
	if _, err := ops.DeclareQueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// Delete it behind the registry's back: only a declaration that reaches
	// the broker would bring it back.
	raw := rawChannel(t, b.URL)
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.DeclareQueue(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if ok, err := ops.QueueExists(ctx, q); ok || err != nil {
		t.Fatalf("an identical second declaration reached the broker (exists %v, %v)", ok, err)
	}
	other := spec
	other.Args.MaxLength = 20
	_, err := ops.DeclareQueue(ctx, other)
	var ce *broker.ConflictError
	if !errors.As(err, &ce) || ce.Field != "Args.MaxLength" || ce.Registered != "10" || ce.Requested != "20" {
		t.Fatalf("conflicting declaration: %v", err)
	}
	if ok, _ := ops.QueueExists(ctx, q); ok {
		t.Fatal("a conflicting declaration reached the broker")
	}
	// IfMissing uses the registered spec instead: up to date, it costs no
	// network call.
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q, Durable: true}, broker.IfMissing()); err != nil {
		t.Fatalf("IfMissing: %v", err)
	}
	raw = rawChannel(t, b.URL)
	if _, err := raw.QueueDeclarePassive(q, true, false, false, false, nil); !isCode(err, amqp.NotFound) {
		t.Fatalf("IfMissing on an up-to-date record reached the broker: %v", err)
	}
}

func isCode(err error, code int) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == code
}

// Read-only names are refused by every path without touching the broker.
func TestReadOnlyByEveryPath(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	ro := b.Name("ro")
	raw := rawChannel(t, b.URL)
	if _, err := raw.QueueDeclare(ro, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := raw.ExchangeDeclare(ro, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"delete default exchange":      ops.DeleteExchange(ctx, "", broker.DeleteOptions{}),
		"delete amq.topic":             ops.DeleteExchange(ctx, "amq.topic", broker.DeleteOptions{}),
		"declare ro exchange":          ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: ro, Type: topology.Direct, ReadOnly: true}),
		"declare amq.* exchange":       ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: "amq.x", Type: topology.Direct}),
		"delete amq.* queue":           second(ops.DeleteQueue(ctx, "amq.gen-x", broker.DeleteOptions{})),
		"declare ro queue":             second(ops.DeclareQueue(ctx, topology.QueueSpec{Name: ro, ReadOnly: true})),
		"declare default exchange":     ops.DeclareExchange(ctx, topology.DefaultExchange()),
		"declare ro exchange (no typ)": ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: ro, ReadOnly: true}),
	} {
		if !errors.Is(err, broker.ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", name, err)
		}
	}
	raw = rawChannel(t, b.URL)
	if _, err := raw.QueueDeclarePassive(ro, false, true, false, false, nil); err != nil {
		t.Fatalf("read-only queue touched: %v", err)
	}
	if err := raw.ExchangeDeclarePassive(ro, "direct", false, true, false, false, nil); err != nil {
		t.Fatalf("read-only exchange touched: %v", err)
	}
	_ = conn.ErrClosed
}

func second[T any](_ T, err error) error { return err }

// IfMissing needs an entity without owning it: a queue that exists with
// other arguments (its owner declared it elsewhere) is used as it is; a
// missing one is declared; both are restored by a check, never by a
// declaration that would conflict; and the owner's declaration on the same
// connection replaces the weak record instead of conflicting with it.
func TestIfMissingUsesWhatExistsAndGivesWayToTheOwner(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	owned, missing := b.Name("owned"), b.Name("missing")
	raw := rawChannel(t, b.URL)
	if _, err := raw.QueueDeclare(owned, true, false, false, false, amqp.Table{"x-max-length": int32(7)}); err != nil {
		t.Fatal(err)
	}
	plain := func(name string) topology.QueueSpec { return topology.QueueSpec{Name: name, Durable: true} }
	if _, err := ops.DeclareQueue(ctx, plain(owned), broker.IfMissing()); err != nil {
		t.Fatalf("IfMissing on a queue declared with other arguments: %v", err)
	}
	if err := ops.Apply(ctx, topology.Topology{Queues: []topology.QueueSpec{plain(missing)}}, broker.IfMissing()); err != nil {
		t.Fatalf("IfMissing on a missing queue: %v", err)
	}
	if ok, err := ops.QueueExists(ctx, missing); !ok || err != nil {
		t.Fatalf("the missing queue was not declared (%v, %v)", ok, err)
	}
	// A restore checks, and declares only what is gone.
	if _, err := raw.QueueDelete(missing, false, false, false); err != nil {
		t.Fatal(err)
	}
	runs := ops.Registry().Restores()
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "a restore run", func() bool { return ops.Registry().Restores() > runs })
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	rep, _ := ops.Registry().LastRestore()
	if !rep.OK() {
		t.Fatalf("restore of weak records failed: %+v", rep.Failed)
	}
	if ok, err := ops.QueueExists(ctx, missing); !ok || err != nil {
		t.Fatalf("a weak record's missing queue was not declared again (%v, %v)", ok, err)
	}
	// The owner declares with its arguments: no ConflictError, the broker
	// judges (the same arguments: fine; other ones: its 406).
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: owned, Durable: true, Args: topology.QueueArgs{MaxLength: 7}}); err != nil {
		t.Fatalf("the owner's declaration after a weak record: %v", err)
	}
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: missing, Durable: true, Args: topology.QueueArgs{MaxLength: 3}}); !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("a declaration that differs from the queue that exists: %v, want the broker's 406", err)
	}
}
