package ack

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/internal/headers"
)

// Headers a copy of a message records (see Copy).
const (
	// HeaderOriginalExchange, HeaderOriginalRoutingKey and
	// HeaderOriginalQueue keep where the message was first published and
	// consumed: a copy travels through the default exchange to a delay or
	// dead-letter queue. The first copy writes them; later copies keep them.
	HeaderOriginalExchange   = "warren-original-exchange"
	HeaderOriginalRoutingKey = "warren-original-routing-key"
	HeaderOriginalQueue      = "warren-original-queue"
	// HeaderOriginalExpiration keeps the message's per-message TTL
	// (milliseconds), which a copy never carries: it would expire the copy
	// out of the dead-letter or delay queue. A replay restores it.
	HeaderOriginalExpiration = "warren-original-expiration"
	// HeaderOriginalUserID keeps the user-id property, which the broker
	// checks against the publishing connection's user: a copy published by
	// another user would be refused (406). A replay by that user restores it.
	HeaderOriginalUserID = "warren-original-user-id"
	// HeaderOriginalDeath keeps the broker's x-death record of the message's
	// earlier dead-letterings, as the same AMQP array of tables: a
	// client-set x-death confuses the broker (and RabbitMQ 4.0 ignores it).
	HeaderOriginalDeath = "warren-original-x-death"
)

// brokerOwned are, with x-death and the x-first-death-* and x-last-death-*
// summaries, the headers the broker writes about one life of a message. A
// copy starts a new life: they are dropped (x-death is moved to
// HeaderOriginalDeath).
var brokerOwned = map[string]bool{
	"x-delivery-count": true, // quorum queues
	"x-received-from":  true, // shovels and federation
}

// Copy returns msg as warren publishes it again: the one way every copier
// (DeadLetter's PublishToDLQ, DelayedRetry, replays, relays) copies a
// message, so that a copy keeps the message whole.
//
//   - Kept: the UUID (message-id), the payload, every property in metadata
//     (content type and encoding, correlation id, reply-to, type, app id,
//     timestamp, priority, delivery mode), every user header with its AMQP
//     type (a header of the delivery whose metadata was not changed is
//     published with its original type: an int32 stays an int32, a table a
//     table), and the W3C trace context of the message's creation.
//   - Moved: the per-message TTL (amqp.expiration) to
//     HeaderOriginalExpiration, the user id to HeaderOriginalUserID, the
//     broker's x-death to HeaderOriginalDeath.
//   - Dropped: the other headers the broker writes about one life of the
//     message in a queue (x-first-death-*, x-last-death-*,
//     x-delivery-count, x-received-from), and warren's own plumbing.
//   - Added: HeaderOriginalExchange, HeaderOriginalRoutingKey and
//     HeaderOriginalQueue, from the delivery, unless an earlier copy
//     recorded them.
//
// The copy's context is msg's, so its publish is bounded by the handler's
// context and its trace continues the handler's.
//
// A nil message has no copy: nil.
func Copy(msg *message.Message) *message.Message {
	if msg == nil {
		return nil
	}
	out := message.NewMessage(msg.UUID, msg.Payload)
	info, fromDelivery := InfoOf(msg)
	var typed map[string]any
	keepTyped := func(k string, v any) {
		if typed == nil {
			typed = map[string]any{}
		}
		typed[k] = v
	}
	for k, v := range msg.Metadata {
		switch {
		case headers.Internal(k):
		case k == "x-death":
			if _, earlier := msg.Metadata[HeaderOriginalDeath]; !earlier {
				out.Metadata[HeaderOriginalDeath] = v
				if raw, ok := info.Headers[k]; ok {
					keepTyped(HeaderOriginalDeath, raw)
				}
			}
		case brokerOwned[k] || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-"):
		case k == headers.MetaExpiration:
			if _, earlier := msg.Metadata[HeaderOriginalExpiration]; !earlier {
				out.Metadata[HeaderOriginalExpiration] = v
			}
		case k == headers.MetaUserID:
			if _, earlier := msg.Metadata[HeaderOriginalUserID]; !earlier {
				out.Metadata[HeaderOriginalUserID] = v
			}
		default:
			out.Metadata[k] = v
			if raw, ok := info.Headers[k]; ok {
				if _, isString := raw.(string); !isString {
					keepTyped(k, raw)
				}
			}
		}
	}
	if fromDelivery && out.Metadata[HeaderOriginalExchange] == "" && out.Metadata[HeaderOriginalRoutingKey] == "" && out.Metadata[HeaderOriginalQueue] == "" {
		out.Metadata[HeaderOriginalExchange] = info.Exchange
		out.Metadata[HeaderOriginalRoutingKey] = info.RoutingKey
		out.Metadata[HeaderOriginalQueue] = info.Queue
	}
	ctx := msg.Context()
	if typed != nil {
		ctx = headers.WithTyped(ctx, typed)
	}
	out.SetContext(ctx)
	return out
}
