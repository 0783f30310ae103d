package instrument

import "testing"

// TestDestinationNaming is the RabbitMQ conventions' destination naming
// (semantic conventions v1.44.0, docs/messaging/rabbitmq.md, "Send span"
// note [1] and "Process span" note [1]), and warren's low-cardinality form
// for span names and metrics.
func TestDestinationNaming(t *testing.T) {
	for _, c := range []struct {
		d                  Destination
		name, template     string
		spanName, metricAs string
	}{
		// send: {exchange}:{routing key}, one part when only one is there,
		// amq.default for the default exchange without a key.
		{Destination{Exchange: "shop", RoutingKey: "order.paid"}, "shop:order.paid", "shop", "send shop", "template"},
		{Destination{Exchange: "logs"}, "logs", "", "send logs", "name"},
		{Destination{RoutingKey: "orders"}, "orders", "", "send orders", "name"},
		{Destination{}, "amq.default", "", "send amq.default", "name"},
		// consume: {exchange}:{routing key}:{queue}, a key equal to the
		// queue given once.
		{Destination{Exchange: "shop", RoutingKey: "order.paid", Queue: "billing"}, "shop:order.paid:billing", "shop:billing", "send shop:billing", "template"},
		{Destination{RoutingKey: "orders", Queue: "orders"}, "orders", "", "send orders", "name"},
		{Destination{Exchange: "logs", Queue: "audit"}, "logs:audit", "", "send logs:audit", "name"},
		// generated and temporary names are left out of the low-cardinality
		// form; a direct reply-to has none.
		{Destination{Exchange: "logs", Queue: "amq.gen-4xK"}, "logs:amq.gen-4xK", "logs", "send logs", "template"},
		{Destination{RoutingKey: "amq.rabbitmq.reply-to.g1h2AA"}, "amq.rabbitmq.reply-to.g1h2AA", "", "send", "none"},
		{Destination{RoutingKey: "replies.7", Queue: "replies.7", Temporary: true}, "replies.7", "", "send", "none"},
	} {
		if got := c.d.Name(); got != c.name {
			t.Errorf("%+v: name %q, want %q", c.d, got, c.name)
		}
		if got := c.d.Template(); got != c.template {
			t.Errorf("%+v: template %q, want %q", c.d, got, c.template)
		}
		x := describe(opSend, c.d, Peer{})
		if x.spanName != c.spanName {
			t.Errorf("%+v: span name %q, want %q", c.d, x.spanName, c.spanName)
		}
		_, hasName := x.count.Value("messaging.destination.name")
		_, hasTemplate := x.count.Value("messaging.destination.template")
		got := "none"
		switch {
		case hasName && hasTemplate:
			got = "both"
		case hasName:
			got = "name"
		case hasTemplate:
			got = "template"
		}
		if got != c.metricAs {
			t.Errorf("%+v: metrics carry the destination as %s, want %s", c.d, got, c.metricAs)
		}
	}
}

// TestMemoAnswersWhatTheSharedCacheAnswers: a subscription's Memo gives the
// description of the destination asked for, its last one without a
// lookup in the shared cache (it answers even once that cache is cleared),
// another one through the cache; and a process's settle operations are
// found once, on the same destination and peer.
func TestMemoAnswersWhatTheSharedCacheAnswers(t *testing.T) {
	var c destinations
	var m Memo
	peer := Peer{Address: "localhost", Port: 5672, ClientID: "c-1"}
	paid := Destination{Exchange: "shop", RoutingKey: "order.paid", Queue: "billing"}
	sent := Destination{Exchange: "shop", RoutingKey: "order.sent", Queue: "billing"}
	check := func(x *described, o op, d Destination, p Peer) {
		t.Helper()
		if want := (destKey{o, d, p}); x.key != want {
			t.Fatalf("described %+v, want %+v", x.key, want)
		}
		if want := describe(o, d, p); x.spanName != want.spanName || len(x.spanAttrs) != len(want.spanAttrs) || !x.count.Equals(&want.count) {
			t.Fatalf("%+v: span %q %v, count %v; want %q %v, %v", x.key, x.spanName, x.spanAttrs, x.count.ToSlice(), want.spanName, want.spanAttrs, want.count.ToSlice())
		}
	}
	first := c.remembered(&m, opProcess, paid, peer)
	check(first, opProcess, paid, peer)
	clear(c.m)
	if again := c.remembered(&m, opProcess, paid, peer); again != first {
		t.Fatal("the memo's own destination was looked up again")
	}
	other := c.remembered(&m, opProcess, sent, peer)
	check(other, opProcess, sent, peer)
	moved := Peer{Address: "other-node", Port: 5672, ClientID: "c-1"}
	check(c.remembered(&m, opProcess, sent, moved), opProcess, sent, moved)
	back := c.remembered(&m, opProcess, paid, peer)
	check(back, opProcess, paid, peer)
	if back == first {
		t.Fatal("a destination the memo no longer held came from it")
	}
	check(c.remembered(nil, opSend, paid, peer), opSend, paid, peer)

	for _, o := range []op{opAck, opNack, opReject} {
		s := back.settle(&c, o)
		check(s, o, paid, peer)
		clear(c.m)
		if back.settle(&c, o) != s {
			t.Fatalf("%s: looked up again", o.name)
		}
	}
}
