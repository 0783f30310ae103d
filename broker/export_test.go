package broker

import (
	"context"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/retry"
)

// SetRestoreGrace sets restoreGrace until the test ends.
func SetRestoreGrace(t interface{ Cleanup(func()) }, d time.Duration) {
	old := restoreGrace
	restoreGrace = d
	t.Cleanup(func() { restoreGrace = old })
}

// ConsumerCount is how many consumers r would restore.
func ConsumerCount(r *Registry) int { return len(r.consumerList()) }

// The confirm channel, for the tests of its returns.
type (
	ConfirmChannel = confirmChannel
	Confirmation   = confirmation
)

const (
	OutcomeAcked    = acked
	OutcomeReturned = returned
)

func NewConfirmChannel(ctx context.Context, c *conn.Conn) (*ConfirmChannel, error) {
	return newConfirmChannel(ctx, c, 10*time.Second, nil)
}

// SetRestoreRetryBackoff paces a restore's retries with b until the test
// ends.
func SetRestoreRetryBackoff(t interface{ Cleanup(func()) }, b retry.Backoff) {
	old := restoreRetryBackoff
	restoreRetryBackoff = b
	t.Cleanup(func() { restoreRetryBackoff = old })
}

// SetConsumerRecoveryBackoff paces a consumer's own attempts to come back
// with b until the test ends.
func SetConsumerRecoveryBackoff(t interface{ Cleanup(func()) }, b retry.Backoff) {
	old := consumerRecoveryBackoff
	consumerRecoveryBackoff = b
	t.Cleanup(func() { consumerRecoveryBackoff = old })
}

// SetLaneChunk sets laneChunk until the test ends.
func SetLaneChunk(t interface{ Cleanup(func()) }, n int) {
	old := laneChunk
	laneChunk = n
	t.Cleanup(func() { laneChunk = old })
}
