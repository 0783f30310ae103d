package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// TestPitfallDeadLetterRoutingKeyNeedsItsExchange: RabbitMQ refuses a queue
// declared with x-dead-letter-routing-key and no x-dead-letter-exchange
// (406 routing_key_but_no_dlx_defined, which closes the channel), though
// dead-lettering by key through the default exchange is what such a
// declare means: the default exchange is the empty string, a value that
// must be given. And once given, it is an argument like any other: the
// same queue declared again without it is refused as inequivalent (406).
// topology.QueueArgs with DeadLetterRoutingKey alone declares
// x-dead-letter-exchange "" with it, so through Ops the queue declares and
// a message it rejects reaches the key's queue.
func TestPitfallDeadLetterRoutingKeyNeedsItsExchange(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	target, keyAlone, withExchange, throughOps := b.Name("dl-target"), b.Name("dl-key-alone"), b.Name("dl-with-exchange"), b.Name("dl-through-ops")
	t.Cleanup(func() {
		for _, q := range []string{target, keyAlone, withExchange, throughOps} {
			_, _ = ops.DeleteQueue(context.Background(), q, broker.DeleteOptions{})
		}
	})

	refused := func(err error, reason string) {
		t.Helper()
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, reason) {
			t.Fatalf("declare: %v; want 406 with %q", err, reason)
		}
	}

	ch := rabbittest.RawChannel(t, b.URL)
	_, err := ch.QueueDeclare(keyAlone, false, false, false, false, amqp.Table{"x-dead-letter-routing-key": target})
	refused(err, "routing_key_but_no_dlx_defined")
	if !ch.IsClosed() {
		t.Fatal("the refusal left the channel open")
	}

	ch = rabbittest.RawChannel(t, b.URL)
	if _, err := ch.QueueDeclare(withExchange, false, false, false, false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}); err != nil {
		t.Fatalf("with x-dead-letter-exchange \"\": %v", err)
	}
	_, err = ch.QueueDeclare(withExchange, false, false, false, false, nil)
	refused(err, "inequivalent arg 'x-dead-letter-exchange'")

	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.DeclareQueue(ctx, topology.QueueSpec{Name: throughOps, Args: topology.QueueArgs{DeadLetterRoutingKey: target}}); err != nil {
		t.Fatalf("QueueArgs with DeadLetterRoutingKey alone: %v", err)
	}
	ch = rabbittest.RawChannel(t, b.URL)
	if err := ch.PublishWithContext(ctx, "", throughOps, false, false, amqp.Publishing{Body: []byte("rejected")}); err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	rabbittest.Eventually(t, 10*time.Second, "the message in "+throughOps, func() bool {
		var ok bool
		d, ok, err = ch.Get(throughOps, false)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if err := d.Reject(false); err != nil {
		t.Fatal(err)
	}
	rabbittest.Eventually(t, 10*time.Second, "the rejected message in "+target, func() bool {
		got, ok, err := ch.Get(target, true)
		if err != nil {
			t.Fatal(err)
		}
		return ok && string(got.Body) == "rejected"
	})
}
