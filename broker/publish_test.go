package broker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/topology"
)

// countingQueue declares an exclusive queue and counts the bodies that
// arrive in it.
func countingQueue(t *testing.T, ops *broker.Ops) (string, func() map[string]int) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	q, err := ops.DeclareQueue(ctx, topology.QueueSpec{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	if _, err := ops.Consume(ctx, broker.ConsumerSpec{Queue: q.Name, AutoAck: true, Handler: func(_ context.Context, d *broker.Delivery) {
		mu.Lock()
		seen[string(d.Body)]++
		mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	return q.Name, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int, len(seen))
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

func waitCount(t *testing.T, seen func() map[string]int, want int) map[string]int {
	t.Helper()
	var s map[string]int
	rabbittest.Eventually(t, 20*time.Second, fmt.Sprintf("%d distinct messages", want), func() bool {
		s = seen()
		return len(s) >= want
	}, func() string { return fmt.Sprintf("saw %d", len(s)) })
	return s
}

// A publish to an exchange that does not exist fails at once with the 404,
// and costs no other message its confirm.
func TestPublishToAMissingExchangeFailsAlone(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{ConfirmChannels: 1})
	ctx := ctxT(t, 30*time.Second)
	q, seen := countingQueue(t, ops)
	var msgs []broker.Outgoing
	for i := 0; i < 50; i++ {
		msgs = append(msgs, broker.Outgoing{RoutingKey: q, Msg: msg(fmt.Sprint("good-", i))})
		if i%10 == 5 {
			msgs = append(msgs, broker.Outgoing{Exchange: b.Name("missing"), Msg: msg(fmt.Sprint("bad-", i))})
		}
	}
	start := time.Now()
	errs := ops.PublishAll(ctx, msgs)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("PublishAll took %v", d)
	}
	for i, err := range errs {
		bad := msgs[i].Exchange != ""
		var ce *conn.RefusedError
		switch {
		case bad && (!errors.As(err, &ce) || ce.Code != amqp.NotFound || !errors.Is(err, conn.ErrNotFound)):
			t.Fatalf("bad message %d: %v, want the 404", i, err)
		case !bad && err != nil:
			t.Fatalf("good message %d: %v", i, err)
		}
	}
	got := waitCount(t, seen, 50)
	for body, n := range got {
		if n != 1 || strings.HasPrefix(body, "bad") {
			t.Fatalf("%q arrived %d times", body, n)
		}
	}
	if len(got) != 50 {
		t.Fatalf("%d of 50 good messages arrived", len(got))
	}
}

// An exchange deleted behind the registry's back: the broker's refusal
// closes the shared confirm channel; the message it names fails with the
// 404 within a second, the others are sent again and arrive.
func TestRefusalOnASharedChannelIsAttributed(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{ConfirmChannels: 1})
	ctx := ctxT(t, 30*time.Second)
	q, seen := countingQueue(t, ops)
	x := b.Name("gone")
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Fanout}); err != nil {
		t.Fatal(err)
	}
	if err := rawChannel(t, b.URL).ExchangeDelete(x, false, false); err != nil {
		t.Fatal(err)
	}
	epoch := ops.Registry().Epoch()
	msgs := []broker.Outgoing{
		{RoutingKey: q, Msg: msg("before")},
		{Exchange: x, Msg: msg("refused")},
		{RoutingKey: q, Msg: msg("after-1")},
		{RoutingKey: q, Msg: msg("after-2")},
	}
	start := time.Now()
	errs := ops.PublishAll(ctx, msgs)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refused publish took %v", d)
	}
	if !errors.Is(errs[1], conn.ErrNotFound) {
		t.Fatalf("refused message: %v", errs[1])
	}
	for _, i := range []int{0, 2, 3} {
		if errs[i] != nil {
			t.Fatalf("message %d: %v", i, errs[i])
		}
	}
	got := waitCount(t, seen, 3)
	if got["after-1"] != 1 || got["after-2"] != 1 || got["before"] < 1 {
		t.Fatalf("arrived %v", got)
	}
	if ops.Registry().Epoch() == epoch {
		t.Fatal("the registry was not told the exchange is missing")
	}
	// Declared again, it is trusted again.
	if err := ops.DeclareExchange(ctx, topology.ExchangeSpec{Name: x, Type: topology.Fanout}); err != nil {
		t.Fatal(err)
	}
	if err := ops.Publish(ctx, x, "", msg("x"), broker.PublishOptions{}); err != nil {
		t.Fatalf("publish after redeclaring: %v", err)
	}
}

// A refusal whose text names nothing this code knows (here an invalid
// expiration) is found by sending the rest one at a time.
func TestUnattributedRefusalIsFoundAlone(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{ConfirmChannels: 1})
	ctx := ctxT(t, 30*time.Second)
	q, seen := countingQueue(t, ops)
	msgs := []broker.Outgoing{
		{RoutingKey: q, Msg: msg("one")},
		{RoutingKey: q, Msg: amqp.Publishing{Body: []byte("bad"), Expiration: "soon"}},
		{RoutingKey: q, Msg: msg("two")},
		{RoutingKey: q, Msg: msg("three")},
	}
	errs := ops.PublishAll(ctx, msgs)
	var ce *conn.RefusedError
	if !errors.As(errs[1], &ce) || !errors.Is(errs[1], conn.ErrPreconditionFailed) {
		t.Fatalf("invalid expiration: %v, want the broker's 406", errs[1])
	}
	for _, i := range []int{0, 2, 3} {
		if errs[i] != nil {
			t.Fatalf("message %d: %v", i, errs[i])
		}
	}
	if got := waitCount(t, seen, 3); got["two"] != 1 || got["three"] != 1 || got["bad"] != 0 {
		t.Fatalf("arrived %v", got)
	}
}

// A message's own context bounds it alone.
func TestCancelledMessageFailsAlone(t *testing.T) {
	b := rabbittest.Shared(t)
	_, ops := setup(t, b.URL, broker.OpsConfig{})
	ctx := ctxT(t, 30*time.Second)
	q, _ := countingQueue(t, ops)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	errs := ops.PublishAll(ctx, []broker.Outgoing{
		{RoutingKey: q, Msg: msg("a")},
		{Ctx: cancelled, RoutingKey: q, Msg: msg("b")},
		{RoutingKey: q, Msg: msg("c")},
	})
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], context.Canceled) {
		t.Fatalf("errors %v", errs)
	}
}

// A message over the broker's max_message_size fails promptly with an error
// naming both sizes; once the limit is known, larger messages fail before
// they are sent.
func TestMessageOverTheMaximumSize(t *testing.T) {
	n := node.Get(t)
	ctx := ctxT(t, 60*time.Second)
	if _, err := n.Ctl(ctx, "eval", "application:set_env(rabbit, max_message_size, 65536)."); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = n.Ctl(context.Background(), "eval", "application:set_env(rabbit, max_message_size, 134217728).")
	})
	_, ops := setup(t, n.URL(), broker.OpsConfig{ConfirmChannels: 1})
	q, seen := countingQueue(t, ops)
	big := make([]byte, 70000)
	msgs := []broker.Outgoing{
		{RoutingKey: q, Msg: msg("small-1")},
		{RoutingKey: q, Msg: amqp.Publishing{Body: big}},
		{RoutingKey: q, Msg: msg("small-2")},
	}
	start := time.Now()
	errs := ops.PublishAll(ctx, msgs)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
	var tl *broker.MessageTooLargeError
	if !errors.As(errs[1], &tl) || tl.Size != 70000 || tl.Limit != 65536 || !errors.Is(errs[1], conn.ErrPreconditionFailed) {
		t.Fatalf("oversize message: %v", errs[1])
	}
	if !strings.Contains(errs[1].Error(), "70000") || !strings.Contains(errs[1].Error(), "65536") {
		t.Fatalf("error does not name both sizes: %v", errs[1])
	}
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("small messages: %v", errs)
	}
	if got := waitCount(t, seen, 2); got["small-2"] != 1 {
		t.Fatalf("arrived %v", got)
	}
	// Known now: refused before sending.
	err := ops.Publish(ctx, "", q, amqp.Publishing{Body: big}, broker.PublishOptions{})
	if !errors.As(err, &tl) || tl.Err != nil {
		t.Fatalf("second oversize message: %v, want refused before sending", err)
	}
}
