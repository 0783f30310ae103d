package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
)

// diagnosis is what a dead letter says about itself: warren's diagnostic
// headers (middleware.DeadLetter's publish mode) or, for a message the
// broker dead-lettered (a reject, an expiry, a length limit, a quorum
// delivery limit), its x-death record.
type diagnosis struct {
	MessageID   string    `json:"message_id,omitempty"`
	Error       string    `json:"error,omitempty"`
	ErrorType   string    `json:"error_type"`
	Attempts    int64     `json:"attempts,omitempty"`
	Exchange    string    `json:"exchange"`
	RoutingKey  string    `json:"routing_key"`
	Queue       string    `json:"queue,omitempty"`
	Handler     string    `json:"handler,omitempty"`
	FirstFailed time.Time `json:"first_failure,omitzero"`
	LastFailed  time.Time `json:"last_failure,omitzero"`
	TraceID     string    `json:"trace_id,omitempty"`
}

// diagnose reads d's diagnostics.
func diagnose(d amqp.Delivery) diagnosis {
	h := d.Headers
	str := func(k string) string {
		switch v := h[k].(type) {
		case string:
			return v
		case []byte:
			return string(v)
		}
		return ""
	}
	g := diagnosis{MessageID: d.MessageId, Error: str(middleware.HeaderDLError), ErrorType: str(middleware.HeaderDLErrorType),
		Exchange: str(middleware.HeaderDLExchange), RoutingKey: str(middleware.HeaderDLRoutingKey), Queue: str(middleware.HeaderDLQueue),
		Handler: str(middleware.HeaderDLHandler), TraceID: str(middleware.HeaderDLTraceID)}
	if n, err := strconv.ParseInt(str(middleware.HeaderDLAttempts), 10, 64); err == nil {
		g.Attempts = n
	}
	g.FirstFailed, _ = time.Parse(time.RFC3339Nano, str(middleware.HeaderDLFirstFail))
	g.LastFailed, _ = time.Parse(time.RFC3339Nano, str(middleware.HeaderDLLastFail))
	if g.ErrorType == "" {
		// The broker dead-lettered it: its latest x-death entry says from
		// where and why.
		if death, ok := latestDeath(h); ok {
			reason, _ := death["reason"].(string)
			g.ErrorType = "x-death:" + reason
			if g.Error == "" {
				g.Error = "dead-lettered by the broker: " + reason
			}
			g.Queue, _ = death["queue"].(string)
			g.Exchange, _ = death["exchange"].(string)
			if keys, ok := death["routing-keys"].([]any); ok && len(keys) > 0 {
				g.RoutingKey, _ = keys[0].(string)
			}
			if t, ok := death["time"].(time.Time); ok {
				g.LastFailed = t
				if g.FirstFailed.IsZero() {
					g.FirstFailed = t
				}
			}
			if g.Queue != "" {
				if n, ok := ack.DeathCount(h, g.Queue, reason); ok {
					g.Attempts = n
				}
			}
		}
		if g.ErrorType == "" {
			g.ErrorType = "unknown"
		}
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

// latestDeath is the newest x-death entry (the broker keeps them newest
// first).
func latestDeath(h amqp.Table) (amqp.Table, bool) {
	deaths, ok := h["x-death"].([]any)
	if !ok || len(deaths) == 0 {
		return nil, false
	}
	t, ok := deaths[0].(amqp.Table)
	return t, ok
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

// origin is where a replay sends the message: its original exchange and
// routing key, or, without them, its original queue through the default
// exchange.
func (g diagnosis) origin() (exchange, key string, ok bool) {
	switch {
	case g.Exchange != "" || g.RoutingKey != "":
		return g.Exchange, g.RoutingKey, true
	case g.Queue != "":
		return "", g.Queue, true
	}
	return "", "", false
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

// cleanForReplay is the message as it goes back: its properties and
// headers, without the record of its death (x-death and warren's
// diagnostic and retry headers), so that it is a first attempt again;
// warren-replayed-from says where it was.
func cleanForReplay(d amqp.Delivery, from string) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		switch {
		case k == "x-death", strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"),
			k == "x-delivery-count", strings.HasPrefix(k, "warren-dl-"), k == ack.AttemptHeader,
			k == middleware.HeaderRetryRound, k == middleware.HeaderRetryLevel:
		default:
			h[k] = v
		}
	}
	h["warren-replayed-from"] = from
	if d.UserId != "" {
		// The broker refuses a user id other than the publisher's own.
		h[ack.HeaderOriginalUserID] = d.UserId
	}
	return amqp.Publishing{
		Headers: h, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	}
}
