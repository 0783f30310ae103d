package payload

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// storeTimeout bounds a claim check's store call made without a caller's
// context (Unmarshal has none).
const storeTimeout = 30 * time.Second

// msgContext is the context of msg's store and key calls.
func msgContext(msg *message.Message) context.Context {
	if msg == nil {
		return context.Background()
	}
	return msg.Context()
}
