package router

import (
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/msgid"
)

// sendReply publishes reply to request's reply-to address with its
// correlation id, confirmed. A request without a reply-to address (sent
// without a Requester) gets no reply. A reply that cannot be sent is the
// request's error, to be requeued: the requester is still waiting.
func sendReply(pub message.Publisher, request, reply *message.Message) error {
	to := request.Metadata.Get(warren.MetaReplyTo)
	if to == "" {
		return nil
	}
	if reply == nil {
		reply = message.NewMessage(msgid.New(), nil)
	}
	reply.Metadata.Set(warren.MetaCorrelationID, request.Metadata.Get(warren.MetaCorrelationID))
	// The reply lives as long as the requester waits, not on disk.
	reply.Metadata.Set(warren.MetaDeliveryMode, "1")
	reply.SetContext(request.Context())
	if err := pub.Publish(to, reply); err != nil {
		return ack.AsRequeue(fmt.Errorf("router: reply to %s: %w", to, err))
	}
	return nil
}

// errorReply turns a request's final failure into an error reply (the
// requester's *warren.RemoteError) and acks the request. An ack.AsRequeue
// error (a reply that could not be sent) is left to requeue the request.
func errorReply(pub message.Publisher) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || ack.KindOf(err) == ack.RequeueKind {
				return out, err
			}
			reply := message.NewMessage(msgid.New(), nil)
			reply.Metadata.Set(warren.HeaderReplyError, err.Error())
			reply.Metadata.Set(warren.HeaderReplyErrorType, ack.ErrorType(err))
			if serr := sendReply(pub, msg, reply); serr != nil {
				return nil, serr
			}
			return nil, nil
		}
	}
}
