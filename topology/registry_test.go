package topology_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// Every Ops on a connection shares its one registry: one restore run per
// reconnect covers what all of them declared, in the documented order.
func TestOneRegistryAndOneRestorePerConnection(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, first := setup(t, p.URL(b.Vhost), topology.OpsConfig{})
	second, err := topology.NewOps(c, topology.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close(ctxT(t, 10*time.Second)) })
	if first.Registry() != second.Registry() || topology.RegistryOf(c) != first.Registry() {
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
	if _, err := second.Consume(ctx, topology.ConsumerSpec{Queue: q1, Handler: receiver(got)}); err != nil {
		t.Fatal(err)
	}
	if _, err := second.DeclareQueue(ctx, topology.QueueSpec{Name: q2, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	reports := make(chan topology.RestoreReport, 10)
	first.Registry().OnRestore("test", func(r topology.RestoreReport) { reports <- r })
	before := first.Registry().Restores()
	for round := 1; round <= 3; round++ {
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
		var rep topology.RestoreReport
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
		var kinds []topology.EntityKind
		for _, e := range rep.Restored {
			kinds = append(kinds, e.Kind)
		}
		want := []topology.EntityKind{topology.KindExchange, topology.KindQueue, topology.KindQueue, topology.KindBinding, topology.KindConsumer}
		if !slices.Equal(kinds, want) {
			t.Fatalf("restore order %v, want %v", kinds, want)
		}
		if err := first.Publish(ctx, x, "k", msg("round"), topology.PublishOptions{Mandatory: true}); err != nil {
			t.Fatal(err)
		}
		expect(t, got, "round")
	}
}

// A second identical declaration is answered by the registry: no network
// call. A conflicting one fails before the network, naming the field.
func TestDeclarationsAreKeyed(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, topology.OpsConfig{})
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
	var ce *topology.ConflictError
	if !errors.As(err, &ce) || ce.Field != "Args.MaxLength" || ce.Registered != "10" || ce.Requested != "20" {
		t.Fatalf("conflicting declaration: %v", err)
	}
	if ok, _ := ops.QueueExists(ctx, q); ok {
		t.Fatal("a conflicting declaration reached the broker")
	}
	// KeepRegistered declares the registered spec instead (once the
	// registry knows it is missing).
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q, Durable: true}, topology.KeepRegistered()); err != nil {
		t.Fatalf("KeepRegistered: %v", err)
	}
	raw = rawChannel(t, b.URL)
	if _, err := raw.QueueDeclarePassive(q, true, false, false, false, nil); !isCode(err, amqp.NotFound) {
		t.Fatalf("KeepRegistered on an up-to-date record reached the broker: %v", err)
	}
}

func isCode(err error, code int) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == code
}

// Read-only names are refused by every path without touching the broker.
func TestReadOnlyByEveryPath(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, topology.OpsConfig{})
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
		"delete default exchange":      ops.DeleteExchange(ctx, "", topology.DeleteOptions{}),
		"delete amq.topic":             ops.DeleteExchange(ctx, "amq.topic", topology.DeleteOptions{}),
		"wrapper delete default":       ops.Exchange(topology.DefaultExchange()).Delete(ctx, topology.DeleteOptions{}),
		"wrapper delete ro exchange":   ops.Exchange(topology.ExchangeSpec{Name: ro, Type: topology.Direct, ReadOnly: true}).Delete(ctx, topology.DeleteOptions{}),
		"wrapper declare ro exchange":  ops.Exchange(topology.ExchangeSpec{Name: ro, Type: topology.Direct, ReadOnly: true}).Declare(ctx),
		"declare amq.* exchange":       ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: "amq.x", Type: topology.Direct}),
		"delete amq.* queue":           second(ops.DeleteQueue(ctx, "amq.gen-x", topology.DeleteOptions{})),
		"wrapper delete ro queue":      second(ops.Queue(topology.QueueSpec{Name: ro, ReadOnly: true}).Delete(ctx, topology.DeleteOptions{})),
		"wrapper declare ro queue":     second(ops.Queue(topology.QueueSpec{Name: ro, ReadOnly: true}).Declare(ctx)),
		"declare ro queue":             second(ops.DeclareQueue(ctx, topology.QueueSpec{Name: ro, ReadOnly: true})),
		"declare default exchange":     ops.DeclareExchange(ctx, topology.DefaultExchange()),
		"declare ro exchange (no typ)": ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: ro, ReadOnly: true}),
	} {
		if !errors.Is(err, topology.ErrReadOnly) {
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
