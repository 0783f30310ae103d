package broker

import (
	"regexp"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/conn"
)

// The broker's refusals of a publish name what they refuse in their text
// (RabbitMQ 3.x and 4.x):
//
//	NOT_FOUND - no exchange 'x' in vhost 'v'
//	ACCESS_REFUSED - cannot publish to internal exchange 'x' in vhost 'v'
//	ACCESS_REFUSED - write access to exchange 'x' in vhost 'v' refused for user 'u'
//	                 (the default exchange named 'amq.default')
//	PRECONDITION_FAILED - message size 2000000 is larger than configured max size 1048576
var (
	refusedExchange = regexp.MustCompile(`exchange '((?:[^']|'')*)' in vhost`)
	refusedSize     = regexp.MustCompile(`message size (\d+) is larger than configured max size (\d+)`)
)

// attribute fails the messages a refusal names and returns the others, to
// be sent again; attributed is false when the text names nothing this code
// understands or no message of the batch (then nobody can tell which
// message it was, and the caller isolates them).
func (o *Ops) attribute(ref *amqp.Error, msgs []Outgoing, again []int, errs []error) (rest []int, attributed bool) {
	var match func(i int) bool
	switch ref.Code {
	case amqp.NotFound, amqp.AccessRefused:
		m := refusedExchange.FindStringSubmatch(ref.Reason)
		if m == nil {
			return again, false
		}
		x := m[1]
		if x == "amq.default" {
			x = "" // how the broker names the default exchange
		}
		if ref.Code == amqp.NotFound {
			o.reg.exchangeMissing(x)
		}
		match = func(i int) bool { return msgs[i].Exchange == x }
	case amqp.PreconditionFailed:
		m := refusedSize.FindStringSubmatch(ref.Reason)
		if m == nil {
			return again, false
		}
		limit, err := strconv.Atoi(m[2])
		if err != nil {
			return again, false
		}
		o.reg.learnMessageLimit(limit)
		match = func(i int) bool { return len(msgs[i].Msg.Body) > limit }
	default:
		return again, false
	}
	// A text that names no message of the batch (an exchange spelled
	// another way, say) attributes nothing: sending the batch again would
	// be refused again, forever.
	matched := false
	for _, i := range again {
		if match(i) {
			matched = true
			break
		}
	}
	if !matched {
		return again, false
	}
	rest = again[:0]
	for _, i := range again {
		if match(i) {
			errs[i] = o.refused(&msgs[i], ref)
			continue
		}
		rest = append(rest, i)
	}
	return rest, true
}

// refused is a message's error for the broker's refusal ref.
func (o *Ops) refused(m *Outgoing, ref *amqp.Error) error {
	ce := &conn.RefusedError{Op: "publish", Entity: m.destination(), Code: ref.Code, Text: ref.Reason, Err: ref}
	if s := refusedSize.FindStringSubmatch(ref.Reason); s != nil {
		limit, _ := strconv.Atoi(s[2])
		o.reg.learnMessageLimit(limit)
		return &MessageTooLargeError{Size: len(m.Msg.Body), Limit: limit, Err: ce}
	}
	if ref.Code == amqp.NotFound {
		if x := refusedExchange.FindStringSubmatch(ref.Reason); x != nil {
			o.reg.exchangeMissing(x[1])
		}
	}
	return ce
}
