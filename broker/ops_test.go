package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

func TestDeclareExistsDeleteExchanges(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	for _, typ := range []topology.ExchangeType{topology.Direct, topology.Fanout, topology.Topic, topology.Headers} {
		name := b.Name("x-" + string(typ))
		if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: name, Type: typ}); err != nil {
			t.Fatalf("declare %s: %v", typ, err)
		}
		if ok, err := ops.ExchangeExists(ctx, name); err != nil || !ok {
			t.Fatalf("exists %s: %v %v", typ, ok, err)
		}
		if err := ops.DeleteExchange(ctx, name, broker.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if ok, err := ops.ExchangeExists(ctx, name); err != nil || ok {
			t.Fatalf("exists after delete %s: %v %v", typ, ok, err)
		}
	}
	if len(ops.Registry().Snapshot().Exchanges) != 0 {
		t.Fatal("deleted exchanges are still recorded")
	}
}

func TestInternalFlagIsSent(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	name := b.Name("internal")
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: name, Type: topology.Fanout, Internal: true}); err != nil {
		t.Fatal(err)
	}
	// The broker refuses publishes to an internal exchange (403): proof that
	// the flag reached it (rmqaio never sent it).
	raw := rawChannel(t, b.URL)
	closed := raw.NotifyClose(make(chan *amqp.Error, 1))
	if err := raw.Publish(name, "", false, false, msg("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.AccessRefused {
			t.Fatalf("broker closed the channel with %v, want 403", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the broker took a publish to an internal exchange")
	}
	// warren knows it is internal and refuses before writing, so no shared
	// confirm channel is closed by it.
	err := ops.Publish(ctx, name, "", msg("x"), broker.PublishOptions{})
	var oe *broker.OperationError
	if !errors.As(err, &oe) || !errors.Is(err, conn.ErrAccessRefused) {
		t.Fatalf("publish to internal exchange: %v, want ErrAccessRefused", err)
	}
}

func TestDelayedExchangeWithoutPluginSaysSo(t *testing.T) {
	b := rabbittest.Shared(t)
	c, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	spec := topology.DelayedExchangeSpec{Name: b.Name("delayed"), DelayedType: topology.Direct}
	err := ops.DeclareExchange(ctx, spec.Exchange())
	if !errors.Is(err, broker.ErrPluginMissing) || !strings.Contains(err.Error(), "rabbitmq_delayed_message_exchange") {
		t.Fatalf("delayed exchange without the plugin: %v", err)
	}
	if len(ops.Registry().Snapshot().Exchanges) != 0 {
		t.Fatal("a failed declare was recorded (it would fail every restore)")
	}
	// The broker closes the whole connection for an unknown exchange type;
	// it comes back and works.
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("after"), AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyEntities(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	for _, s := range []topology.ExchangeSpec{topology.DefaultExchange(), {Name: "amq.topic", Type: topology.Topic}, {Name: b.Name("ro"), Type: topology.Direct, ReadOnly: true}} {
		err := ops.DeclareExchange(ctx, s)
		var oe *broker.OperationError
		if !errors.As(err, &oe) || !errors.Is(err, broker.ErrReadOnly) {
			t.Fatalf("declare read-only %q: %v", s.Name, err)
		}
	}
	for _, name := range []string{"amq.direct", "amq.fanout"} {
		if err := ops.DeleteExchange(ctx, name, broker.DeleteOptions{}); !errors.Is(err, broker.ErrReadOnly) {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("roq"), ReadOnly: true}); !errors.Is(err, broker.ErrReadOnly) {
		t.Fatalf("declare read-only queue: %v", err)
	}
	// Apply checks read-only entities instead of failing.
	q := b.Name("q")
	top := topology.Topology{
		Exchanges: []topology.ExchangeSpec{topology.DefaultExchange(), {Name: "amq.direct", Type: topology.Direct}},
		Queues:    []topology.QueueSpec{{Name: q, AutoDelete: true}},
		Bindings:  []topology.BindSpec{{Source: "amq.direct", Destination: q, RoutingKey: q}},
	}
	if err := ops.Apply(ctx, top); err != nil {
		t.Fatal(err)
	}
	missing := topology.Topology{Exchanges: []topology.ExchangeSpec{{Name: b.Name("absent"), Type: topology.Direct, ReadOnly: true}}}
	if err := ops.Apply(ctx, missing); !errors.Is(err, conn.ErrNotFound) {
		t.Fatalf("Apply with a missing read-only exchange: %v, want ErrNotFound", err)
	}
}

func TestQueueArgumentsReachTheBroker(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	raw := rawChannel(t, b.URL)
	tests := []struct {
		spec topology.QueueSpec
		raw  amqp.Table // the same arguments written by hand
	}{
		{topology.QueueSpec{Args: topology.QueueArgs{MessageTTL: 1500 * time.Millisecond, Expires: time.Minute, MaxLength: 5, MaxLengthBytes: 1 << 20, Overflow: topology.RejectPublish}},
			amqp.Table{"x-message-ttl": int64(1500), "x-expires": int64(60000), "x-max-length": int64(5), "x-max-length-bytes": int64(1 << 20), "x-overflow": "reject-publish"}},
		{topology.QueueSpec{Args: topology.QueueArgs{DeadLetterExchange: "dlx", DeadLetterRoutingKey: "dead", MaxPriority: 10, QueueMode: "lazy", SingleActiveConsumer: true, Extra: amqp.Table{"x-custom": "v"}}},
			amqp.Table{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead", "x-max-priority": int64(10), "x-queue-mode": "lazy", "x-single-active-consumer": true, "x-custom": "v"}},
		{topology.QueueSpec{Durable: true, Args: topology.QueueArgs{Type: topology.Quorum, DeliveryLimit: 3, DeadLetterStrategy: topology.AtLeastOnce, Overflow: topology.RejectPublish, DeadLetterExchange: "dlx"}},
			amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(3), "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", "x-dead-letter-exchange": "dlx"}},
		{topology.QueueSpec{Durable: true, Args: topology.QueueArgs{Type: topology.Stream, MaxLengthBytes: 1 << 20}},
			amqp.Table{"x-queue-type": "stream", "x-max-length-bytes": int64(1 << 20)}},
	}
	for i, tt := range tests {
		tt.spec.Name = b.Name("args" + string(rune('a'+i)))
		if _, err := ops.DeclareQueue(ctx, tt.spec); err != nil {
			t.Fatalf("declare %d: %v", i, err)
		}
		// A redeclare with different arguments is a 406; the same ones
		// succeed: the broker holds exactly the arguments we meant.
		if _, err := raw.QueueDeclare(tt.spec.Name, tt.spec.Durable, false, false, false, tt.raw); err != nil {
			t.Fatalf("args %d differ from the hand-written ones: %v", i, err)
		}
	}
	// And they act: max length 5 with reject-publish keeps 5.
	name := b.Name("argsa")
	for i := 0; i < 7; i++ {
		_ = ops.Publish(ctx, "", name, msg("m"), broker.PublishOptions{})
	}
	info, err := ops.Inspect(ctx, name)
	if err != nil || info.Messages != 5 {
		t.Fatalf("max-length 5 queue holds %d (%v)", info.Messages, err)
	}
}

func TestGeneratedQueueNames(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	info, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Name, "warren.gen-") {
		t.Fatalf("generated name %q", info.Name)
	}
	if s := ops.Registry().Snapshot(); len(s.Queues) != 1 || s.Queues[0].Name != info.Name {
		t.Fatalf("registry does not hold the generated name: %+v", s.Queues)
	}
}

func TestBindUnbindQueuesExchangesHeaders(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	src := topology.ExchangeSpec{Name: b.Name("src"), Type: topology.Topic, AutoDelete: true}
	mid := topology.ExchangeSpec{Name: b.Name("mid"), Type: topology.Headers, AutoDelete: true}
	for _, x := range []topology.ExchangeSpec{src, mid} {
		if err := ops.DeclareExchange(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	// src --(orders.*)--> mid --(headers kind=a)--> q
	toMid := topology.BindSpec{Source: src.Name, Destination: mid.Name, Kind: topology.BindExchange, RoutingKey: "orders.*"}
	if err := ops.Bind(ctx, toMid); err != nil {
		t.Fatal(err)
	}
	hdr := amqp.Table{"x-match": "all", "kind": "a"}
	if err := ops.Bind(ctx, topology.BindSpec{Source: mid.Name, Destination: q.Name, Args: hdr}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, Handler: receiver(got)})
	if err != nil {
		t.Fatal(err)
	}
	pub := func(key, kind, body string, mandatory bool) error {
		return ops.PublishAll(ctx, []broker.Outgoing{{Exchange: src.Name, RoutingKey: key, Mandatory: mandatory,
			Msg: amqp.Publishing{Headers: amqp.Table{"kind": kind}, Body: []byte(body)}}})[0]
	}
	if err := pub("orders.new", "a", "1", false); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "1")
	// Filtered: the broker routes them nowhere, so mandatory publishes come
	// back unroutable.
	for _, m := range []struct{ key, kind string }{{"orders.new", "b"}, {"users.new", "a"}} {
		if err := pub(m.key, m.kind, "", true); !errors.Is(err, broker.ErrUnroutable) {
			t.Fatalf("%s/%s: %v, want filtered out (unroutable)", m.key, m.kind, err)
		}
	}
	if err := ops.Unbind(ctx, toMid); err != nil {
		t.Fatal(err)
	}
	snap := ops.Registry().Snapshot()
	if len(snap.Bindings) != 1 || snap.Bindings[0].Source != mid.Name {
		t.Fatalf("registry bindings after unbind: %+v", snap.Bindings)
	}
	// src was auto-delete and lost its last binding: the broker deleted it
	// and the registry forgot it.
	if ok, _ := ops.ExchangeExists(ctx, src.Name); ok {
		t.Fatal("auto-delete exchange still exists")
	}
	for _, x := range snap.Exchanges {
		if x.Name == src.Name {
			t.Fatal("registry still restores an exchange the broker auto-deleted")
		}
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteConditionsAndCounts(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	name := b.Name("del")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: name}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := ops.Publish(ctx, "", name, msg("m"), broker.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := ops.Inspect(ctx, name)
	if err != nil || info.Messages != 3 || info.Consumers != 0 {
		t.Fatalf("inspect: %+v %v", info, err)
	}
	_, err = ops.DeleteQueue(ctx, name, broker.DeleteOptions{IfEmpty: true})
	var ce *conn.RefusedError
	if !errors.As(err, &ce) || ce.Code != amqp.PreconditionFailed || !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("if-empty delete of a full queue: %v", err)
	}
	// The failed delete cost nobody their channel: the next call works.
	n, err := ops.DeleteQueue(ctx, name, broker.DeleteOptions{})
	if err != nil || n != 3 {
		t.Fatalf("delete: %d %v, want 3 purged", n, err)
	}
	if ok, err := ops.QueueExists(ctx, name); ok || err != nil {
		t.Fatalf("exists after delete: %v %v", ok, err)
	}
	x := b.Name("used")
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Direct}); err != nil {
		t.Fatal(err)
	}
	qi, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err := ops.Bind(ctx, topology.BindSpec{Source: x, Destination: qi.Name}); err != nil {
		t.Fatal(err)
	}
	if err := ops.DeleteExchange(ctx, x, broker.DeleteOptions{IfUnused: true}); !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("if-unused delete of a bound exchange: %v", err)
	}
	if err := ops.DeleteExchange(ctx, x, broker.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(ops.Registry().Snapshot().Bindings) != 0 {
		t.Fatal("bindings of a deleted exchange are still recorded")
	}
}

func TestExistsNotFoundKeepsNextCallWorking(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	for i := 0; i < 5; i++ {
		if ok, err := ops.QueueExists(ctx, b.Name("nope")); ok || err != nil {
			t.Fatalf("missing queue: %v %v", ok, err)
		}
		if ok, err := ops.ExchangeExists(ctx, b.Name("nope")); ok || err != nil {
			t.Fatalf("missing exchange: %v %v", ok, err)
		}
		if ok, err := ops.ExchangeExists(ctx, "amq.direct"); !ok || err != nil {
			t.Fatalf("amq.direct: %v %v", ok, err)
		}
	}
	if _, err := ops.Inspect(ctx, b.Name("nope")); !errors.Is(err, conn.ErrNotFound) {
		t.Fatalf("inspect missing: %v", err)
	}
}

func TestPublishMandatoryUnroutable(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	err := ops.Publish(ctx, "", b.Name("no-such-queue"), msg("lost?"), broker.PublishOptions{Mandatory: true})
	if !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("mandatory publish to nowhere: %v, want ErrUnroutable", err)
	}
	// Without mandatory the broker drops it and confirms.
	if err := ops.Publish(ctx, "", b.Name("no-such-queue"), msg("x"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	q, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err := ops.Publish(ctx, "", q.Name, msg("x"), broker.PublishOptions{Mandatory: true}); err != nil {
		t.Fatalf("routable mandatory publish: %v", err)
	}
}

func TestConsumeAndStopConsume(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	q, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Name: b.Name("c")})
	got := make(chan string, 10)
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, Handler: receiver(got), PrefetchCount: 5, Priority: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := ops.Publish(ctx, "", q.Name, msg("hello"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "hello")
	if info, _ := ops.Inspect(ctx, q.Name); info.Consumers != 1 {
		t.Fatalf("consumers %d", info.Consumers)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(c.Err(), broker.ErrConsumerStopped) {
		t.Fatalf("Err after stop: %v", c.Err())
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if info, _ := ops.Inspect(ctx, q.Name); info.Consumers != 0 {
		t.Fatalf("consumer still there after StopConsume: %d", info.Consumers)
	}
	if broker.ConsumerCount(ops.Registry()) != 0 {
		t.Fatal("stopped consumer still recorded")
	}
	if err := ops.Publish(ctx, "", q.Name, msg("after"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	// Confirmed, and still in the queue: nobody consumes it.
	if info, err := ops.Inspect(ctx, q.Name); err != nil || info.Messages != 1 || len(got) != 0 {
		t.Fatalf("after stop: %+v %v, %d received", info, err, len(got))
	}
}

func TestForce(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	// Exchange: recreated with another type, its recorded bindings re-applied.
	x := b.Name("fx")
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Direct}); err != nil {
		t.Fatal(err)
	}
	q, _ := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err := ops.Bind(ctx, topology.BindSpec{Source: x, Destination: q.Name, RoutingKey: "k"}); err != nil {
		t.Fatal(err)
	}
	// The registry knows x as direct: refused before the network, naming
	// the field; the broker would have said 406.
	err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Fanout})
	var ce *broker.ConflictError
	if !errors.As(err, &ce) || ce.Field != "Type" || !errors.Is(err, broker.ErrConflict) || !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("redeclare with another type without force: %v", err)
	}
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Fanout}, broker.WithForce()); err != nil {
		t.Fatal(err)
	}
	if err := ops.Publish(ctx, x, "any", msg("routed"), broker.PublishOptions{Mandatory: true}); err != nil {
		t.Fatalf("binding not re-applied after force: %v", err)
	}
	// Queue: a non-empty queue is never deleted without consent.
	name := b.Name("fq")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: name}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_ = ops.Publish(ctx, "", name, msg("precious"), broker.PublishOptions{})
	}
	changed := topology.QueueSpec{Name: name, Args: topology.QueueArgs{MaxLength: 100}}
	_, err = ops.DeclareQueue(ctx, changed, broker.WithForce())
	var fe *broker.ForceRefusedError
	if !errors.As(err, &fe) || fe.Messages != 2 || !errors.Is(err, broker.ErrMessagesAtStake) || !strings.Contains(err.Error(), "2 message") {
		t.Fatalf("force on a non-empty queue: %v", err)
	}
	if info, _ := ops.Inspect(ctx, name); info.Messages != 2 {
		t.Fatal("refused force still lost messages")
	}
	info, err := ops.DeclareQueue(ctx, changed, broker.WithForce(), broker.AcceptMessageLoss())
	if err != nil || info.Messages != 0 {
		t.Fatalf("force with AcceptMessageLoss: %+v %v", info, err)
	}
}

func TestInvalidSpecsFailBeforeTheNetwork(t *testing.T) {
	c, err := conn.New("amqp://guest:guest@127.0.0.1:1/", conn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := broker.NewOps(c, broker.OpsConfig{}) // never opened
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, err := range []error{
		ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: "x", Type: "bogus"}),
		func() error {
			_, e := ops.DeclareQueue(ctx, topology.QueueSpec{Name: "q", Args: topology.QueueArgs{Type: topology.Quorum}})
			return e
		}(),
		ops.Bind(ctx, topology.BindSpec{Source: "", Destination: "q"}),
		func() error { _, e := ops.Consume(ctx, broker.ConsumerSpec{Queue: "q"}); return e }(),
		ops.Apply(ctx, topology.Topology{Queues: []topology.QueueSpec{{Name: "amq.x"}}}),
	} {
		if !errors.Is(err, topology.ErrInvalidSpec) {
			t.Fatalf("got %v, want ErrInvalidSpec before any network call", err)
		}
	}
	if _, err := broker.NewOps(nil, broker.OpsConfig{}); err == nil {
		t.Fatal("NewOps(nil) accepted")
	}
	if _, err := broker.NewOps(c, broker.OpsConfig{Timeout: -1}); !errors.Is(err, conn.ErrInvalidConfig) {
		t.Fatalf("negative timeout: %v", err)
	}
}

func TestOpsTimeoutAppliesWithoutDeadline(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	_, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{Timeout: 300 * time.Millisecond})
	if err := p.Stall(); err != nil {
		t.Fatal(err)
	}
	defer p.Heal()
	start := time.Now()
	_, err := ops.DeclareQueue(context.Background(), topology.QueueSpec{Exclusive: true})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("declare on a stalled network: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("declare took %v with a 300ms timeout", d)
	}
}

// PITFALLS 51: an exchange that is the source of an exchange-to-exchange
// binding is in use for exchange.delete's if-unused, though it has no
// queue left (the AMQP 0-9-1 text speaks of queue bindings; RabbitMQ counts
// every binding whose source it is). Being a binding's destination does not
// count, and deleting the destination takes the binding with it.
func TestPitfallExchangeBindingKeepsItsSourceInUse(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	src, dst := b.Name("src"), b.Name("dst")
	for _, x := range []string{src, dst} {
		if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Direct}); err != nil {
			t.Fatal(err)
		}
	}
	qi, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []topology.BindSpec{
		{Source: src, Destination: qi.Name, RoutingKey: "k"},
		{Source: src, Destination: dst, Kind: topology.BindExchange, RoutingKey: "k"},
	} {
		if err := ops.Bind(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ops.DeleteQueue(ctx, qi.Name, broker.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// No queue is bound to src any more; its binding to dst still counts.
	if err := ops.DeleteExchange(ctx, src, broker.DeleteOptions{IfUnused: true}); !errors.Is(err, conn.ErrPreconditionFailed) {
		t.Fatalf("if-unused delete of the source of an exchange binding: %v, want ErrPreconditionFailed", err)
	}
	// The destination is not in use, and the refusal before cost the next
	// call nothing.
	if err := ops.DeleteExchange(ctx, dst, broker.DeleteOptions{IfUnused: true}); err != nil {
		t.Fatalf("if-unused delete of an exchange binding's destination: %v", err)
	}
	// The binding went with its destination: src is unused now.
	if err := ops.DeleteExchange(ctx, src, broker.DeleteOptions{IfUnused: true}); err != nil {
		t.Fatalf("if-unused delete once the destination is gone: %v", err)
	}
	for _, x := range []string{src, dst} {
		if ok, err := ops.ExchangeExists(ctx, x); ok || err != nil {
			t.Fatalf("%s exists after its delete: %v %v", x, ok, err)
		}
	}
}

// TestPitfallDeleteOfAMissingNameSucceeds: RabbitMQ answers queue.delete and
// exchange.delete of a name that does not exist with delete-ok (0 messages
// for a queue), where AMQP 0-9-1 says 404, and the channel stays open: a
// delete's success does not say that anything was there. Through Ops the
// same: a missing queue deletes with 0 messages, a missing exchange without
// an error, so a caller that must know asks first (QueueExists,
// ExchangeExists).
func TestPitfallDeleteOfAMissingNameSucceeds(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	missing := b.Name("never-declared")

	c, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ch.QueueDelete(missing, false, false, false); err != nil || n != 0 {
		t.Fatalf("raw queue.delete of a missing queue: %d messages, %v; want delete-ok with 0", n, err)
	}
	if err := ch.ExchangeDelete(missing, false, false); err != nil {
		t.Fatalf("raw exchange.delete of a missing exchange: %v; want delete-ok", err)
	}
	if ch.IsClosed() {
		t.Fatal("the channel closed after deleting missing names")
	}

	if ok, err := ops.QueueExists(ctx, missing); ok || err != nil {
		t.Fatalf("QueueExists(%s) = %v, %v before any declare", missing, ok, err)
	}
	if n, err := ops.DeleteQueue(ctx, missing, broker.DeleteOptions{}); err != nil || n != 0 {
		t.Fatalf("Ops.DeleteQueue of a missing queue: %d, %v; want 0 and no error", n, err)
	}
	if err := ops.DeleteExchange(ctx, missing, broker.DeleteOptions{}); err != nil {
		t.Fatalf("Ops.DeleteExchange of a missing exchange: %v; want no error", err)
	}
}
