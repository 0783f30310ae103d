package broker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/topology"
)

// world is a topology with one of every kind of entity, and consumers that
// report what they receive.
type world struct {
	ops                   *broker.Ops
	src, mid, hdr, direct string
	exclusive             string // server-named (generated) exclusive queue
	plain                 string
	gotExclusive, gotHdr  chan string
}

func buildWorld(t *testing.T, ops *broker.Ops, name func(string) string) *world {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	w := &world{ops: ops, src: name("src"), mid: name("mid"), hdr: name("hdr"), direct: name("direct"),
		plain: name("plain"), gotExclusive: make(chan string, 100), gotHdr: make(chan string, 100)}
	for _, x := range []topology.ExchangeSpec{
		{Name: w.src, Type: topology.Topic},
		{Name: w.mid, Type: topology.Fanout, AutoDelete: true},
		{Name: w.hdr, Type: topology.Headers},
		{Name: w.direct, Type: topology.Direct, Internal: true},
	} {
		if err := ops.DeclareExchange(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true}) // generated name
	if err != nil {
		t.Fatal(err)
	}
	w.exclusive = ex.Name
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: w.plain, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	for _, bnd := range []topology.BindSpec{
		{Source: w.src, Destination: w.mid, Kind: topology.BindExchange, RoutingKey: "a.*"},                          // exchange -> exchange
		{Source: w.mid, Destination: w.exclusive},                                                                    // fanout -> exclusive queue
		{Source: w.src, Destination: w.hdr, Kind: topology.BindExchange, RoutingKey: "#"},                            // exchange -> exchange
		{Source: w.hdr, Destination: w.plain, Args: amqp.Table{"x-match": "any", "color": "red", "shape": "circle"}}, // headers binding
		{Source: w.src, Destination: w.direct, Kind: topology.BindExchange, RoutingKey: "internal.only"},             // into an internal exchange
		{Source: w.direct, Destination: w.plain, RoutingKey: "internal.only"},                                        // internal -> queue
	} {
		if err := ops.Bind(ctx, bnd); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: w.exclusive, Handler: receiver(w.gotExclusive), Exclusive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: w.plain, Handler: receiver(w.gotHdr)}); err != nil {
		t.Fatal(err)
	}
	return w
}

// check proves every entity is there and every consumer receives.
func (w *world) check(t *testing.T, round string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	pub := func(key string, headers amqp.Table, body string) {
		t.Helper()
		if err := w.ops.Publish(ctx, w.src, key, amqp.Publishing{Headers: headers, Body: []byte(body)}, broker.PublishOptions{Mandatory: true}); err != nil {
			t.Fatalf("%s: publish %s: %v", round, body, err)
		}
	}
	pub("a.b", nil, round+"-fanout")
	expect(t, w.gotExclusive, round+"-fanout")
	pub("z", amqp.Table{"color": "red"}, round+"-headers")
	expect(t, w.gotHdr, round+"-headers")
	pub("internal.only", nil, round+"-internal")
	expect(t, w.gotHdr, round+"-internal")
	if info, err := w.ops.Inspect(ctx, w.exclusive); err != nil || info.Consumers != 1 {
		t.Fatalf("%s: exclusive queue %+v %v", round, info, err)
	}
}

func TestRestoreAfterConnectionCut(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	failures := restoreFailures(t, ops)
	w := buildWorld(t, ops, b.Name)
	w.check(t, "before")
	for i := 0; i < 3; i++ {
		if err := p.Drop(); err != nil {
			t.Fatal(err)
		}
		// WaitConnected returns after the restore: everything is back.
		rabbittest.Eventually(t, 10*time.Second, "the drop noticed", func() bool { return c.State() != conn.StateConnected })
		if err := c.WaitConnected(ctxT(t, 20*time.Second)); err != nil {
			t.Fatal(err)
		}
		w.check(t, "after-cut")
	}
	select {
	case f := <-failures:
		t.Fatalf("restore reported a failure: %v", f)
	default:
	}
	if rep, ok := ops.Registry().LastRestore(); !ok || !rep.OK() || rep.Run != 3 {
		t.Fatalf("last restore %+v (ok %v), want the third, clean", rep, ok)
	}
}

func TestRestoreAfterBrokerRestart(t *testing.T) {
	n := node.Get(t)
	c, ops := setup(t, n.URL(), broker.OpsConfig{})
	w := buildWorld(t, ops, func(s string) string { return "restart." + s })
	w.check(t, "before")
	// A restart loses every non-durable entity; the registry brings them back.
	n.Stop()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConnected(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	w.check(t, "after-restart")
}

func TestRestoreFailureOfOneEntityDoesNotStopOthers(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	failures := restoreFailures(t, ops)
	ctx := ctxT(t, 30*time.Second)
	conflicted := b.Name("conflicted")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: conflicted, Args: topology.QueueArgs{MaxLength: 10}}); err != nil {
		t.Fatal(err)
	}
	after := b.Name("after")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: after, AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: after, Handler: receiver(got)}); err != nil {
		t.Fatal(err)
	}
	// Somebody else replaces the first queue with other arguments: its
	// restore will be a 406.
	raw := rawChannel(t, b.URL)
	if _, err := raw.QueueDelete(conflicted, false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDeclare(conflicted, false, false, false, false, amqp.Table{"x-max-length": int64(99)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	var re *broker.RestoreError
	select {
	case re = <-failures:
	case <-time.After(20 * time.Second):
		t.Fatal("no restore failure reported")
	}
	if re.Kind != "queue" || re.Code != amqp.PreconditionFailed || !errors.Is(re, conn.ErrPreconditionFailed) {
		t.Fatalf("reported %v (code %d)", re, re.Code)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// The auto-delete queue after it, and its consumer, came back.
	if err := ops.Publish(ctx, "", after, msg("still here"), broker.PublishOptions{Mandatory: true}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "still here")
}

func TestServerCancelIsResubscribed(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	q := b.Name("cancelled")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	c, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got)})
	if err != nil {
		t.Fatal(err)
	}
	// An operator deletes and recreates the queue: the broker cancels our
	// consumer (basic.cancel) while the connection stays up.
	raw := rawChannel(t, b.URL)
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var info broker.QueueInfo
	rabbittest.Eventually(t, 10*time.Second, "the consumer resubscribed after a server cancel", func() bool {
		var err error
		info, err = ops.Inspect(ctx, q)
		return err == nil && info.Consumers == 1
	}, func() string { return fmt.Sprintf("%+v (consumer err %v)", info, c.Err()) })
	if err := ops.Publish(ctx, "", q, msg("again"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "again")
	// Deleted for good by somebody else: the queue is registered, so the
	// consumer declares it again from its spec and goes on.
	if _, err := raw.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the queue declared again under its consumer", func() bool {
		var err error
		info, err = ops.Inspect(ctx, q)
		return err == nil && info.Consumers == 1
	}, func() string { return fmt.Sprintf("%+v (consumer err %v)", info, c.Err()) })
	if err := ops.Publish(ctx, "", q, msg("redeclared"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "redeclared")
	select {
	case <-c.Done():
		t.Fatalf("consumer ended: %v", c.Err())
	default:
	}
}

func TestNoRestoreEntitiesAreNotRestored(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true}, broker.NoRestore())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, Handler: func(context.Context, *broker.Delivery) {}}, broker.NoRestore())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cons.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a NoRestore consumer outlived its connection")
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := ops.QueueExists(ctx, q.Name); ok || err != nil {
		t.Fatalf("NoRestore exclusive queue came back: %v %v", ok, err)
	}
}

// A consumer whose restore failed (its queue was missing when the
// connection came back) subscribes by itself once it can: it never
// silently stops.
func TestConsumerRecoversAfterItsRestoreFailed(t *testing.T) {
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	failures := restoreFailures(t, ops)
	ctx := ctxT(t, 60*time.Second)
	q := b.Name("late")
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q}, broker.NoRestore()); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	cons, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got)})
	if err != nil {
		t.Fatal(err)
	}
	p.Cut()
	raw := rawChannel(t, b.URL)
	// The broker drops our consumer when it sees the cut; until then the
	// delete (if-unused) is refused and closes the raw channel.
	rabbittest.Eventually(t, 10*time.Second, "the queue deleted once its consumer is gone", func() bool {
		if _, err := raw.QueueDelete(q, true, false, false); err == nil {
			return true
		}
		raw = rawChannel(t, b.URL)
		return false
	})
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-failures:
		if e.Kind != "consumer" || e.Code != amqp.NotFound {
			t.Fatalf("restore failure %v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the consumer's restore did not fail")
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ops.Publish(ctx, "", q, msg("back"), broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "back")
	select {
	case <-cons.Done():
		t.Fatalf("consumer ended: %v", cons.Err())
	default:
	}
}

// A consumer needs its queue, not the queue's bindings: it comes back while
// the restore run is still putting a binding back. Here the binding's
// source exchange belongs to someone else, who deleted it and declares it
// again only once the consumer has received a message sent to its queue
// meanwhile. Had the consumer waited for the bindings, the message would
// come only after the binding's retries had given up (the run's report
// would list it failed); as it is, the message comes first and the binding
// is restored on its next retry.
func TestConsumersComeBackWhileBindingsAreRestored(t *testing.T) {
	// Retries slow enough that a message, and the test's answer to it,
	// come before they give up even on a loaded machine: a lone binding
	// is retried alone, five times, 13.5 s in all.
	broker.SetRestoreRetryBackoff(t, retry.Backoff{InitialInterval: 500 * time.Millisecond, Multiplier: 2, MaxInterval: 6 * time.Second})
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	reports := restoreReports(t, ops)
	ctx := ctxT(t, 90*time.Second)
	raw := rawChannel(t, b.URL)
	theirs, q := b.Name("theirs"), b.Name("ours")
	if err := raw.ExchangeDeclare(theirs, "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q}); err != nil {
		t.Fatal(err)
	}
	if err := ops.Bind(ctx, topology.BindSpec{Source: theirs, Destination: q}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q, Handler: receiver(got)}); err != nil {
		t.Fatal(err)
	}
	if err := raw.ExchangeDelete(theirs, false, false); err != nil {
		t.Fatal(err)
	}
	if err := p.Drop(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Publish("", q, false, false, msg("during the restore")); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "during the restore")
	select {
	case r := <-reports:
		t.Fatalf("the restore run ended before its consumer received anything: %+v", r)
	default:
	}
	if err := raw.ExchangeDeclare(theirs, "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r := nextReport(t, ctx, reports)
	if !r.OK() {
		t.Fatalf("restore failed: %+v", r)
	}
	var kinds []broker.EntityKind
	for _, e := range r.Restored {
		kinds = append(kinds, e.Kind)
	}
	if want := []broker.EntityKind{broker.KindQueue, broker.KindBinding, broker.KindConsumer}; !slices.Equal(kinds, want) {
		t.Fatalf("restored %v, want %v (the report lists kinds in the order of a run)", kinds, want)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	// The binding is back: their exchange reaches our consumer.
	if err := raw.Publish(theirs, "", false, false, msg("through their exchange")); err != nil {
		t.Fatal(err)
	}
	expect(t, got, "through their exchange")
}

// TestRestoreOfBatchesWithARefusalAmongThem: the restore sends each
// kind's declarations, and each shared channel's consumes, as one batch
// (issue 33). One refusal among good ones in a batch closes its channel,
// and the broker drops what followed it there. The refused entity alone is
// reported, with the broker's code, and everything else comes back: a
// queue someone else declared again with other arguments (406), and a
// consumer whose queue another client holds with an exclusive consumer
// (403), each among eleven good ones.
func TestRestoreOfBatchesWithARefusalAmongThem(t *testing.T) {
	const n, conflicted, held = 12, 4, 7
	b := rabbittest.Shared(t)
	p := rabbittest.NewProxy(t, rabbittest.SharedAddr)
	c, ops := setup(t, p.URL(b.Vhost), broker.OpsConfig{})
	reports := restoreReports(t, ops)
	ctx := ctxT(t, 60*time.Second)
	top := topology.Topology{}
	var specs []broker.ConsumerSpec
	got := make(chan string, 2*n)
	for i := range n {
		q := b.Name(fmt.Sprintf("q%d", i))
		top.Queues = append(top.Queues, topology.QueueSpec{Name: q, Args: topology.QueueArgs{MaxLength: 100}})
		specs = append(specs, broker.ConsumerSpec{Queue: q, Tag: fmt.Sprintf("c%d", i), Handler: receiver(got)})
	}
	if err := ops.Apply(ctx, top); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.ConsumeAll(ctx, specs); err != nil {
		t.Fatal(err)
	}
	// While warren is away, another client replaces one queue and takes
	// another with an exclusive consumer (once the broker has let go of
	// warren's consumer there).
	p.Cut()
	raw, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	admin, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.QueueDelete(top.Queues[conflicted].Name, false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.QueueDeclare(top.Queues[conflicted].Name, true, false, false, false, amqp.Table{"x-max-length": int64(99)}); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 20*time.Second, "an exclusive consumer of another client", func() bool {
		ch, err := raw.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.Consume(top.Queues[held].Name, "theirs", false, true, false, false, nil)
		return err == nil
	})
	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	r := nextReport(t, ctx, reports)
	if r.Err != nil {
		t.Fatalf("restore run failed: %v", r.Err)
	}
	var failed []string
	for _, f := range r.Failed {
		failed = append(failed, fmt.Sprintf("%s %s %d", f.Kind, f.Entity, f.Code))
	}
	want := []string{
		fmt.Sprintf("queue %s %d", top.Queues[conflicted].Name, amqp.PreconditionFailed),
		fmt.Sprintf("consumer c%d %d", held, amqp.AccessRefused),
	}
	if !slices.Equal(failed, want) {
		t.Fatalf("failed %v, want %v", failed, want)
	}
	restored := map[broker.EntityKind]int{}
	for _, e := range r.Restored {
		restored[e.Kind]++
	}
	// The conflicted queue's consumer consumes from their queue: it exists.
	if restored[broker.KindQueue] != n-1 || restored[broker.KindConsumer] != n-1 {
		t.Fatalf("restored %v, want %d queues and %d consumers", restored, n-1, n-1)
	}
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	for i, q := range top.Queues {
		if i == held {
			continue
		}
		if err := admin.Publish("", q.Name, false, false, msg(q.Name)); err != nil {
			t.Fatal(err)
		}
		expect(t, got, q.Name)
	}
}
