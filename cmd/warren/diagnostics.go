package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/delay"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/middleware"
)

// The dialects a dead letter can be written in: how it says what happened
// and where it came from.
const (
	// dialectWarren: warren's diagnostic headers (middleware.DeadLetter's
	// PublishToDLQ, the delay levels' unroutable queue).
	dialectWarren = "warren"
	// dialectBroker: the broker's own dead-lettering (a reject, an expiry,
	// a length or delivery limit), which records only x-death.
	dialectBroker = "x-death"
	// dialectWatermill: Watermill's PoisonQueue middleware (reason_poisoned,
	// topic_poisoned, handler_poisoned).
	dialectWatermill = "watermill"
	// dialectDue: a due scheduled message waiting for warren's hand-over
	// (warren.delay.due).
	dialectDue = "scheduled"
)

// diagnosis is what a dead letter says about itself, whatever dialect it is
// written in.
type diagnosis struct {
	MessageID string `json:"message_id,omitempty"`
	Dialect   string `json:"dialect"`
	Error     string `json:"error,omitempty"`
	ErrorType string `json:"error_type"`
	Attempts  int64  `json:"attempts,omitempty"`
	// AttemptsAtLeast: the broker's dead-lettering counts deliveries, not
	// the in-process retries of each; Attempts is a lower bound.
	AttemptsAtLeast bool   `json:"attempts_at_least,omitempty"`
	Exchange        string `json:"exchange"`
	RoutingKey      string `json:"routing_key"`
	// Topic is the Watermill topic a poisoned message came from
	// (replayed through --topic-mapping).
	Topic       string    `json:"topic,omitempty"`
	Queue       string    `json:"queue,omitempty"`
	Handler     string    `json:"handler,omitempty"`
	FirstFailed time.Time `json:"first_failure,omitzero"`
	LastFailed  time.Time `json:"last_failure,omitzero"`
	TraceID     string    `json:"trace_id,omitempty"`
	// origin is known: Exchange and RoutingKey say where a replay goes.
	origin bool
}

// headerString reads a header that is a string (or bytes).
func headerString(h amqp.Table, k string) string {
	switch v := h[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// diagnose reads d's diagnostics in its dialect: warren's headers first (a
// warren dead letter also carries Watermill's poison keys, for Watermill's
// tools), then Watermill's poison keys, then the broker's x-death, then a
// due scheduled message's routing.
func diagnose(d amqp.Delivery) diagnosis {
	h := d.Headers
	str := func(k string) string { return headerString(h, k) }
	g := diagnosis{MessageID: d.MessageId}
	switch {
	case str(middleware.HeaderDLErrorType) != "":
		g.Dialect = dialectWarren
		g.Error, g.ErrorType = str(middleware.HeaderDLError), str(middleware.HeaderDLErrorType)
		g.Exchange, g.RoutingKey, g.Queue = str(middleware.HeaderDLExchange), str(middleware.HeaderDLRoutingKey), str(middleware.HeaderDLQueue)
		g.Handler, g.TraceID = str(middleware.HeaderDLHandler), str(middleware.HeaderDLTraceID)
		if n, err := strconv.ParseInt(str(middleware.HeaderDLAttempts), 10, 64); err == nil {
			g.Attempts = n
		}
		g.FirstFailed, _ = time.Parse(time.RFC3339Nano, str(middleware.HeaderDLFirstFail))
		g.LastFailed, _ = time.Parse(time.RFC3339Nano, str(middleware.HeaderDLLastFail))
		g.origin = g.Exchange != "" || g.RoutingKey != "" || g.Queue != ""
		if g.Exchange == "" && g.RoutingKey == "" {
			g.RoutingKey = g.Queue
		}
	case str(wmw.ReasonForPoisonedKey) != "" || str(wmw.PoisonedTopicKey) != "":
		g.Dialect = dialectWatermill
		g.Error, g.ErrorType = str(wmw.ReasonForPoisonedKey), "poisoned"
		g.Topic, g.Handler = str(wmw.PoisonedTopicKey), str(wmw.PoisonedHandlerKey)
		g.Attempts = attemptsOf(h)
		g.origin = g.Topic != ""
	default:
		if deathDiagnosis(d, &g) {
			break
		}
		if x, key, ok := delay.ScheduledFrom(d.Exchange, d.RoutingKey, h); ok {
			g.Dialect, g.ErrorType = dialectDue, "due"
			g.Error = "a scheduled message due and waiting for warren's hand-over"
			g.Exchange, g.RoutingKey, g.origin = x, key, true
			break
		}
		g.Dialect, g.ErrorType = "unknown", "unknown"
	}
	// A copy warren made (a delayed retry) says where the message was first
	// published, better than the hops it took since.
	if x, key := str(ack.HeaderOriginalExchange), str(ack.HeaderOriginalRoutingKey); (x != "" || key != "") && g.Dialect == dialectBroker {
		g.Exchange, g.RoutingKey, g.origin = x, key, true
	}
	if first := str(middleware.HeaderFirstFailure); first != "" && g.FirstFailed.IsZero() {
		g.FirstFailed, _ = time.Parse(time.RFC3339Nano, first)
	}
	if g.TraceID == "" {
		if tp := str("traceparent"); len(tp) >= 35 {
			g.TraceID = tp[3:35]
		}
	}
	return g
}

// attemptsOf is warren's attempt count of a message: the executions before
// this delivery (warren-attempt) and this one.
func attemptsOf(h amqp.Table) int64 {
	n, err := strconv.ParseInt(headerString(h, ack.AttemptHeader), 10, 64)
	if err != nil {
		return 0
	}
	return n + 1
}

// delayQueue reports warren's delay levels' queues and exchanges, which are
// hops, never a message's origin.
func delayEntity(name string) bool { return strings.HasPrefix(name, "warren.delay.") }

// deathDiagnosis reads the broker's x-death: why and from where it
// dead-lettered the message. The origin is the message's first death
// outside warren's delay levels (x-death lists them newest first): the
// queue it was consumed from, and the exchange and routing key it was
// published with there (decoded from the delay levels' key when it came
// back through them). Attempts are warren's count and the broker's,
// whichever is more: a lower bound, since neither sees the in-process
// retries of the last delivery.
func deathDiagnosis(d amqp.Delivery, g *diagnosis) bool {
	deaths, ok := d.Headers["x-death"].([]any)
	if !ok || len(deaths) == 0 {
		return false
	}
	g.Dialect = dialectBroker
	var first amqp.Table
	for i := len(deaths) - 1; i >= 0; i-- {
		t, ok := deaths[i].(amqp.Table)
		if !ok {
			continue
		}
		if q, _ := t["queue"].(string); !delayEntity(q) {
			first = t
			break
		}
	}
	latest, _ := deaths[0].(amqp.Table)
	if first == nil {
		first = latest
	}
	reason, _ := latest["reason"].(string)
	g.ErrorType = "x-death:" + reason
	g.Error = "dead-lettered by the broker: " + reason
	g.Queue, _ = first["queue"].(string)
	g.Exchange, _ = first["exchange"].(string)
	if keys, ok := first["routing-keys"].([]any); ok && len(keys) > 0 {
		g.RoutingKey, _ = keys[0].(string)
	}
	if x, key, ok := delay.ScheduledFrom(g.Exchange, g.RoutingKey, nil); ok || delayEntity(g.Exchange) {
		g.Exchange, g.RoutingKey = x, key
		if !ok {
			g.Exchange, g.RoutingKey = "", g.Queue
		}
	}
	g.origin = g.Exchange != "" || g.RoutingKey != "" || g.Queue != ""
	if g.Exchange == "" && g.RoutingKey == "" {
		g.RoutingKey = g.Queue
	}
	if t, ok := first["time"].(time.Time); ok {
		g.FirstFailed = t
	}
	if t, ok := latest["time"].(time.Time); ok {
		g.LastFailed = t
	}
	deaths64 := int64(0)
	if g.Queue != "" {
		if n, ok := headers.DeathCount(d.Headers, g.Queue, reason); ok {
			deaths64 = n
		}
	}
	g.Attempts = max(deaths64, attemptsOf(d.Headers))
	if prev, err := strconv.ParseInt(headerString(d.Headers, ack.AttemptHeader), 10, 64); err == nil {
		g.Attempts = max(g.Attempts, prev+deaths64)
	}
	g.AttemptsAtLeast = g.Attempts > 0
	return true
}

// deadLetteredAt is when the message arrived in the dead-letter queue, as
// far as it says.
func (g diagnosis) deadLetteredAt(d amqp.Delivery) time.Time {
	switch {
	case !g.LastFailed.IsZero():
		return g.LastFailed
	case !d.Timestamp.IsZero():
		return d.Timestamp
	}
	return time.Time{}
}

// topicMapping is how a Watermill topic (a poisoned message's) becomes an
// exchange and routing key: --topic-mapping.
type topicMapping string

func (m topicMapping) route(topic string) (exchange, key string, err error) {
	switch {
	case m == "queue":
		return "", topic, nil
	case m == "fanout":
		return topic, "", nil
	case strings.HasPrefix(string(m), "topic:"):
		return strings.TrimPrefix(string(m), "topic:"), topic, nil
	}
	return "", "", &usageError{fmt.Errorf("--topic-mapping %q: want queue, fanout or topic:EXCHANGE", string(m))}
}

// origin is where a replay sends the message: its original exchange and
// routing key, or its topic through the mapping.
func (g diagnosis) originVia(m topicMapping) (exchange, key string, ok bool, err error) {
	if !g.origin {
		return "", "", false, nil
	}
	if g.Dialect == dialectWatermill {
		x, k, err := m.route(g.Topic)
		return x, k, err == nil, err
	}
	return g.Exchange, g.RoutingKey, true, nil
}

// matches reports whether g passes the replay filters.
func (f replayFilter) matches(g diagnosis, d amqp.Delivery, now time.Time) bool {
	if f.reason != "" && g.ErrorType != f.reason && !strings.Contains(g.Error, f.reason) {
		return false
	}
	at := g.deadLetteredAt(d)
	if f.olderThan > 0 && (at.IsZero() || now.Sub(at) < f.olderThan) {
		return false
	}
	if f.newerThan > 0 && (at.IsZero() || now.Sub(at) > f.newerThan) {
		return false
	}
	for k, want := range f.headers {
		if fmt.Sprint(d.Headers[k]) != want {
			return false
		}
	}
	return true
}
