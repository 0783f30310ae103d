package topology

import (
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestSpecValidation(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		name  string
		spec  interface{ Validate() error }
		field string // "" means valid
	}{
		{"exchange ok", ExchangeSpec{Name: "e", Type: Topic}, ""},
		{"exchange no type", ExchangeSpec{Name: "e"}, "Type"},
		{"exchange unknown type", ExchangeSpec{Name: "e", Type: "fancy"}, "Type"},
		{"exchange long name", ExchangeSpec{Name: long, Type: Direct}, "Name"},
		{"exchange bad utf8", ExchangeSpec{Name: "\xff", Type: Direct}, "Name"},
		{"exchange typed arg in extra", ExchangeSpec{Name: "e", Type: Direct, Args: ExchangeArgs{Extra: amqp.Table{"alternate-exchange": "x"}}}, "Args.Extra"},
		{"exchange arg of bad type", ExchangeSpec{Name: "e", Type: Direct, Args: ExchangeArgs{Extra: amqp.Table{"k": struct{}{}}}}, "Args.Extra"},
		{"default exchange ok", DefaultExchange(), ""},
		{"delayed ok", DelayedExchangeSpec{Name: "d", DelayedType: Topic}, ""},
		{"delayed bad type", DelayedExchangeSpec{Name: "d", DelayedType: Headers}, "Args.Extra"},
		{"delayed no name", DelayedExchangeSpec{DelayedType: Direct}, "Name"},
		{"queue ok", QueueSpec{Name: "q", Durable: true, Args: QueueArgs{Type: Quorum, DeliveryLimit: 3}}, ""},
		{"queue generated name ok", QueueSpec{Exclusive: true}, ""},
		{"queue long name", QueueSpec{Name: long}, "Name"},
		{"queue amq. reserved", QueueSpec{Name: "amq.mine"}, "Name"},
		{"queue unknown type", QueueSpec{Name: "q", Args: QueueArgs{Type: "fast"}}, "Args.Type"},
		{"quorum not durable", QueueSpec{Name: "q", Args: QueueArgs{Type: Quorum}}, "Args.Type"},
		{"quorum exclusive", QueueSpec{Name: "q", Durable: true, Exclusive: true, Args: QueueArgs{Type: Quorum}}, "Args.Type"},
		{"stream auto-delete", QueueSpec{Name: "q", Durable: true, AutoDelete: true, Args: QueueArgs{Type: Stream}}, "Args.Type"},
		{"negative ttl", QueueSpec{Name: "q", Args: QueueArgs{MessageTTL: -time.Second}}, "Args.MessageTTL"},
		{"sub-ms ttl", QueueSpec{Name: "q", Args: QueueArgs{MessageTTL: time.Microsecond}}, "Args.MessageTTL"},
		{"negative expires", QueueSpec{Name: "q", Args: QueueArgs{Expires: -1}}, "Args.Expires"},
		{"negative max length", QueueSpec{Name: "q", Args: QueueArgs{MaxLength: -1}}, "Args.MaxLength"},
		{"negative max bytes", QueueSpec{Name: "q", Args: QueueArgs{MaxLengthBytes: -1}}, "Args.MaxLengthBytes"},
		{"unknown overflow", QueueSpec{Name: "q", Args: QueueArgs{Overflow: "spill"}}, "Args.Overflow"},
		{"dl strategy on classic", QueueSpec{Name: "q", Args: QueueArgs{Type: Classic, DeadLetterStrategy: AtMostOnce}}, "Args.DeadLetterStrategy"},
		{"at-least-once without reject-publish", QueueSpec{Name: "q", Durable: true, Args: QueueArgs{Type: Quorum, DeadLetterStrategy: AtLeastOnce}}, "Args.DeadLetterStrategy"},
		{"max priority 0 ok", QueueSpec{Name: "q"}, ""},
		{"max priority 256", QueueSpec{Name: "q", Args: QueueArgs{MaxPriority: 256}}, "Args.MaxPriority"},
		{"max priority negative", QueueSpec{Name: "q", Args: QueueArgs{MaxPriority: -1}}, "Args.MaxPriority"},
		{"max priority on quorum", QueueSpec{Name: "q", Durable: true, Args: QueueArgs{Type: Quorum, MaxPriority: 5}}, "Args.MaxPriority"},
		{"unknown queue mode", QueueSpec{Name: "q", Args: QueueArgs{QueueMode: "eager"}}, "Args.QueueMode"},
		{"delivery limit on classic", QueueSpec{Name: "q", Args: QueueArgs{Type: Classic, DeliveryLimit: 3}}, "Args.DeliveryLimit"},
		{"typed arg in extra", QueueSpec{Name: "q", Args: QueueArgs{Extra: amqp.Table{"x-message-ttl": int64(5)}}}, "Args.Extra"},
		{"extra of bad type", QueueSpec{Name: "q", Args: QueueArgs{Extra: amqp.Table{"x-foo": []int{1}}}}, "Args.Extra"},
		{"bind ok", BindSpec{Source: "e", Destination: "q", RoutingKey: "k"}, ""},
		{"bind default exchange", BindSpec{Source: "", Destination: "q"}, "Source"},
		{"bind no destination", BindSpec{Source: "e"}, "Destination"},
		{"bind bad kind", BindSpec{Source: "e", Destination: "q", Kind: 7}, "Kind"},
		{"bind bad x-match", BindSpec{Source: "e", Destination: "q", Args: amqp.Table{"x-match": "some"}}, "Args"},
		{"bind long key", BindSpec{Source: "e", Destination: "q", RoutingKey: long}, "RoutingKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid spec rejected: %v", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("got %v, want a *SpecError", err)
			}
			if !strings.Contains(err.Error(), ": "+tt.field+": ") {
				t.Fatalf("error does not name %s: %v", tt.field, err)
			}
		})
	}
}

func TestQueueArgsTableInMilliseconds(t *testing.T) {
	tab := QueueArgs{Type: Quorum, MessageTTL: 1500 * time.Millisecond, Expires: time.Minute, DeliveryLimit: 3,
		DeadLetterRoutingKey: "dead", MaxLength: 10, SingleActiveConsumer: true}.Table()
	want := amqp.Table{"x-queue-type": "quorum", "x-message-ttl": int64(1500), "x-expires": int64(60000), "x-delivery-limit": int64(3),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead", "x-max-length": int64(10), "x-single-active-consumer": true}
	if tableKey(tab) != tableKey(want) {
		t.Fatalf("got %v, want %v", tab, want)
	}
	if (QueueArgs{}).Table() != nil {
		t.Fatal("empty args must send no table")
	}
}

// FuzzSpecValidation: validation never panics and only ever returns
// *SpecError values.
func FuzzSpecValidation(f *testing.F) {
	f.Add("orders", "topic", "quorum", int64(1500), 10, "all", true, false)
	f.Add("", "", "", int64(-1), 300, "some", false, true)
	f.Fuzz(func(t *testing.T, name, typ, qtype string, ttlMs int64, prio int, xmatch string, durable, exclusive bool) {
		specs := []interface{ Validate() error }{
			ExchangeSpec{Name: name, Type: ExchangeType(typ), Args: ExchangeArgs{AlternateExchange: name, Extra: amqp.Table{name: typ}}},
			DelayedExchangeSpec{Name: name, DelayedType: ExchangeType(typ)},
			QueueSpec{Name: name, Durable: durable, Exclusive: exclusive, Args: QueueArgs{
				Type: QueueType(qtype), MessageTTL: time.Duration(ttlMs) * time.Millisecond, MaxPriority: prio,
				Overflow: Overflow(typ), QueueMode: qtype, DeliveryLimit: prio, Extra: amqp.Table{name: ttlMs},
			}},
			BindSpec{Source: name, Destination: typ, RoutingKey: qtype, Args: amqp.Table{"x-match": xmatch}},
		}
		for _, s := range specs {
			err := s.Validate()
			if err == nil {
				continue
			}
			var se *SpecError
			if !errors.As(err, &se) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("%T: untyped error %v", s, err)
			}
		}
	})
}
