package tests

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/retry"
)

type preset struct {
	name string
	// mapping returns the preset for a consumer group ("" for none).
	mapping func(group string) warren.Mapping
	groups  bool
}

var presets = []preset{
	// The default exchange routes to exactly one queue: consumer groups do
	// not exist in this preset by construction.
	{"QueuePerTopic", func(string) warren.Mapping { return warren.QueuePerTopic{} }, false},
	{"FanoutPerTopic", func(g string) warren.Mapping { return warren.FanoutPerTopic{ConsumerGroup: g} }, true},
	{"TopicExchange", func(g string) warren.Mapping {
		return warren.TopicExchange{Exchange: "warren.acceptance", ConsumerGroup: g}
	}, true},
}

func constructors(url func(t *testing.T) string, p preset, maxInFlight int) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	withGroup := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		c := openConn(t, url(t))
		m := p.mapping(group)
		pub, err := warren.NewPublisher(c, warren.PublisherConfig{Mapping: m})
		if err != nil {
			t.Fatal(err)
		}
		// The suite nacks hundreds of messages and expects each back soon
		// (TestContinueAfterErrors: 300 nacks); the production backoff
		// (100ms doubling) is tested in nospin_test.go.
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{Mapping: m, MaxInFlight: maxInFlight, CloseTimeout: 2 * time.Second,
			Redelivery: warren.RedeliveryConfig{Backoff: retry.Backoff{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}}})
		if err != nil {
			t.Fatal(err)
		}
		return pub, sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) { return withGroup(t, "") }, withGroup
}

func features(p preset, ordered bool) tests.Features {
	return tests.Features{
		ConsumerGroups:                      p.groups,
		GuaranteedOrder:                     ordered,
		GuaranteedOrderWithSingleSubscriber: ordered,
		Persistent:                          true,
	}
}

// TestPubSub runs Watermill's universal Pub/Sub suite against the shared
// broker for every mapping preset. Its TestReconnect needs a broker restart
// and runs in TestReconnect (reconnect_test.go), on a disposable node, for a
// queue mapping and for streams.
func TestPubSub(t *testing.T) {
	t.Parallel()
	for _, p := range presets {
		t.Run(p.name, func(t *testing.T) {
			url := func(t *testing.T) string { return rabbittest.SharedURL(sharedVhost(t)) }
			pub, group := constructors(url, p, 1)
			tests.TestPubSub(t, features(p, true), pub, group)
		})
	}
}

// TestPubSubMaxInFlight runs the suite with 16 handlers per subscription;
// ordering is then not guaranteed.
func TestPubSubMaxInFlight(t *testing.T) {
	t.Parallel()
	p := presets[1]
	url := func(t *testing.T) string { return rabbittest.SharedURL(sharedVhost(t)) }
	pub, group := constructors(url, p, 16)
	tests.TestPubSub(t, features(p, false), pub, group)
}

func sharedVhost(t *testing.T) string { return rabbittest.Shared(t).Vhost }
