package warren

import "time"

// delay is the wait before a failed message's next delivery, after its
// attempt-th attempt (Backoff.Wait). It depends only on the attempt count,
// which the Subscriber remembers across redeliveries, not on a backoff
// object that a redelivery would reset.
func (c RedeliveryConfig) delay(attempt int) time.Duration { return c.Backoff.Wait(attempt) }
