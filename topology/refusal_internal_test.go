package topology

import (
	"errors"
	"slices"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestRefusalAttribution: a refusal fails the messages its text names; a
// text that names none of the batch attributes nothing (sending the batch
// again would be refused again, forever: the caller isolates instead).
func TestRefusalAttribution(t *testing.T) {
	batch := []Outgoing{{Exchange: "", RoutingKey: "q"}, {Exchange: "orders", RoutingKey: "k"}, {Exchange: "", RoutingKey: "q2"}}
	for _, tc := range []struct {
		name     string
		reason   string
		rest     []int
		attrib   bool
		refusedN int
	}{
		{"default exchange is amq.default in the text", "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'v' refused for user 'u'", []int{1}, true, 2},
		{"named exchange", "ACCESS_REFUSED - write access to exchange 'orders' in vhost 'v' refused for user 'u'", []int{0, 2}, true, 1},
		{"an exchange nobody in the batch publishes to", "ACCESS_REFUSED - access to exchange 'elsewhere' in vhost 'v' refused for user 'u'", []int{0, 1, 2}, false, 0},
		{"a text this code does not know", "ACCESS_REFUSED - something new", []int{0, 1, 2}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make([]error, len(batch))
			rest, attributed := (&Ops{}).attribute(&amqp.Error{Code: amqp.AccessRefused, Reason: tc.reason, Server: true}, batch, []int{0, 1, 2}, errs)
			if attributed != tc.attrib || !slices.Equal(rest, tc.rest) {
				t.Fatalf("attribute = %v, %v; want %v, %v", rest, attributed, tc.rest, tc.attrib)
			}
			n := 0
			for _, err := range errs {
				if err != nil {
					n++
					if !errors.Is(err, ErrAccessRefused) {
						t.Errorf("refused message's error %v is not ErrAccessRefused", err)
					}
				}
			}
			if n != tc.refusedN {
				t.Fatalf("%d messages failed, want %d", n, tc.refusedN)
			}
		})
	}
}
