package broker

import (
	"errors"
	"slices"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/conn"
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
					if !errors.Is(err, conn.ErrAccessRefused) {
						t.Errorf("refused message's error %v is not conn.ErrAccessRefused", err)
					}
				}
			}
			if n != tc.refusedN {
				t.Fatalf("%d messages failed, want %d", n, tc.refusedN)
			}
		})
	}
}

// TestRestoreRetriesMetadataStoreTimeouts: what RabbitMQ 4.x answers when
// its metadata store (Khepri) times out (541 INTERNAL_ERROR on a declare, a
// delete or a binding; 404 on a queue operation) is retried in restore like
// the races of a reconnect (404, 405); a refusal that no retry fixes is not.
func TestRestoreRetriesMetadataStoreTimeouts(t *testing.T) {
	for _, c := range []struct {
		err   error
		retry bool
	}{
		{&amqp.Error{Code: amqp.InternalError, Reason: "INTERNAL_ERROR - failed to declare exchange 'x' in vhost '/' because the operation timed out"}, true},
		{&amqp.Error{Code: amqp.InternalError, Reason: "INTERNAL_ERROR - Could not add binding due to timeout"}, true},
		{&amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - failed to perform operation on queue 'q' in vhost '/' due to timeout"}, true},
		{&amqp.Error{Code: amqp.ResourceLocked, Reason: "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q'"}, true},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl'"}, false},
		{&amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - access to queue 'q' refused"}, false},
	} {
		if got := retriedInRestore(c.err); got != c.retry {
			t.Errorf("%v: retried %v, want %v", c.err, got, c.retry)
		}
	}
}
