package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/lazyctx"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// askCounter is a context that counts what it is asked.
type askCounter struct {
	context.Context
	done, err atomic.Int32
}

func (c *askCounter) Done() <-chan struct{} { c.done.Add(1); return c.Context.Done() }
func (c *askCounter) Err() error            { c.err.Add(1); return c.Context.Err() }

// TestPitfallPublishWithContextAsksForDone (PITFALLS 62): amqp091-go's
// publish with a context does nothing with it but select on its Done before
// the write, so a context whose timer is made only when somebody asks for
// Done (a publish's, internal/lazyctx) gets one from every publish. The
// confirm channel asks Err instead, and a PublishAll bounded by a call's
// context leaves it unarmed, as it leaves a consumed message's context its
// messages carry.
func TestPitfallPublishWithContextAsksForDone(t *testing.T) {
	b := rabbittest.Shared(t)
	q := b.Name("asks-for-done")
	ch := rabbittest.RawChannel(t, b.URL)
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	raw := &askCounter{Context: context.Background()}
	dc, err := ch.PublishWithDeferredConfirmWithContext(raw, "", q, false, false, amqp.Publishing{Body: []byte("raw")})
	if err != nil {
		t.Fatal(err)
	}
	if !dc.Wait() {
		t.Fatal("raw publish nacked")
	}
	if raw.done.Load() == 0 {
		t.Fatal("amqp091-go's publish did not ask for Done: the pitfall is gone, and the confirm channel's Err check with it can go")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := rabbittest.OpenConn(t, b.URL, conn.Config{})
	cc, err := broker.NewConfirmChannel(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	asked := &askCounter{Context: context.Background()}
	conf, err := cc.Publish(asked, "", q, false, amqp.Publishing{Body: []byte("warren")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-conf.Done():
	case <-ctx.Done():
		t.Fatal("no confirm")
	}
	if asked.done.Load() != 0 || asked.err.Load() == 0 {
		t.Fatalf("the confirm channel asked for Done %d times and for Err %d, want Err only", asked.done.Load(), asked.err.Load())
	}

	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close(context.Background())
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: q}); err != nil {
		t.Fatal(err)
	}
	// The first publish opens the Ops' confirm channel, which waits on
	// its context's Done (a slow path, as a blocked connection's is).
	if err := ops.PublishAll(ctx, []broker.Outgoing{{RoutingKey: q, Msg: amqp.Publishing{Body: []byte("0")}}})[0]; err != nil {
		t.Fatal(err)
	}
	var alarm lazyctx.Alarm
	defer alarm.Stop()
	call := lazyctx.Bound(context.Background(), time.Minute, &alarm)
	defer call.Cancel()
	// A message bounded by the call itself, as a request's is.
	msgs := []broker.Outgoing{{RoutingKey: q, Msg: amqp.Publishing{Body: []byte("1")}}, {Ctx: call, RoutingKey: q, Msg: amqp.Publishing{Body: []byte("2")}}}
	for i, err := range ops.PublishAll(call, msgs) {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, ring := lazyctx.Until(call); ring == nil {
		t.Fatal("PublishAll armed the timer of the call's context (Until waits on its Done)")
	}

	// A handler's publish: messages made from a consumed message carry
	// its context, and the call may be made with it too. Neither arms the
	// consumed message's timer.
	consumed := lazyctx.New(context.Background(), time.Minute)
	defer consumed.Cancel()
	for _, parent := range []context.Context{context.Background(), consumed} {
		call := lazyctx.Bound(parent, time.Minute, &alarm)
		err := ops.PublishAll(call, []broker.Outgoing{{Ctx: consumed, RoutingKey: q, Msg: amqp.Publishing{Body: []byte("3")}}})[0]
		call.Cancel()
		if err != nil {
			t.Fatal(err)
		}
		if consumed.Armed() {
			t.Fatalf("a publish of a message bounded by a consumed message's context (the call's parent: %v) armed its timer", parent)
		}
	}
}
