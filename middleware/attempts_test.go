package middleware_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/retry"
)

// One meaning of attempt: the handler sees 1, 2, 3 through in-process
// retries, the delayed-retry copy carries 3, and its next delivery is 4.
func TestAttemptsAcrossRetryAndDelayedRetry(t *testing.T) {
	var seen []int
	h := func(m *message.Message) ([]*message.Message, error) {
		seen = append(seen, ack.Attempt(m))
		return nil, errors.New("fails")
	}
	var hooked []int
	retries := &kit.Publisher{}
	stack := []message.HandlerMiddleware{
		kit.Must(middleware.Ack(middleware.AckConfig{})),
		kit.Must(middleware.DelayedRetry(middleware.DelayedRetryConfig{Publisher: retries, Levels: []time.Duration{time.Second}})),
		kit.Must(middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, Sleep: (&kit.Sleeper{}).Sleep,
			OnAttempt: func(a middleware.RetryAttempt) { hooked = append(hooked, a.Attempt) }})),
	}
	r := kit.Run(kit.NewMessage("x"), h, stack...)
	if fmt.Sprint(seen) != "[1 2 3]" || fmt.Sprint(hooked) != "[1 2 3]" {
		t.Fatalf("attempts seen %v, hook %v; want [1 2 3]", seen, hooked)
	}
	if r.Disposition != ack.Ack || len(retries.Published()) != 1 {
		t.Fatalf("disposition %v, %d republished", r.Disposition, len(retries.Published()))
	}
	copyOf := retries.Published()[0].Msg
	if got := copyOf.Metadata.Get(ack.AttemptHeader); got != "3" {
		t.Fatalf("the delayed copy carries %s previous attempts, want 3", got)
	}
	// The copy comes back from the delay queue: its next attempts are 4, 5, 6.
	seen = nil
	back := kit.NewMessage("x", kit.WithMetadata(ack.AttemptHeader, "3"), kit.WithMetadata(middleware.HeaderRetryRound, "1"))
	kit.Run(back, h, stack...)
	if fmt.Sprint(seen) != "[4 5 6]" {
		t.Fatalf("attempts after the delay queue %v, want [4 5 6]", seen)
	}
}

// Every middleware config is checked the same way: each bad field is
// named, every error is configerr.ErrInvalidConfig.
func TestMiddlewareConfigsValidate(t *testing.T) {
	second := func(_ any, err error) error { return err }
	for name, tc := range map[string]struct {
		err   error
		field string
	}{
		"retry":            {second(middleware.Retry(middleware.RetryConfig{MaxAttempts: -1, Backoff: retry.Backoff{Multiplier: 0.5}})), "middleware.RetryConfig.MaxAttempts"},
		"retry multiplier": {second(middleware.Retry(middleware.RetryConfig{Backoff: retry.Backoff{Multiplier: 0.5}})), "middleware.RetryConfig.Backoff.Multiplier"},
		"ack":              {second(middleware.Ack(middleware.AckConfig{OnPermanent: ack.Disposition(42)})), "middleware.AckConfig.OnPermanent"},
		"delayed":          {second(middleware.DelayedRetry(middleware.DelayedRetryConfig{Levels: []time.Duration{-1}})), "middleware.DelayedRetryConfig.Levels[0]"},
		"dead letter":      {second(middleware.DeadLetter(middleware.DeadLetterConfig{Mode: 7})), "middleware.DeadLetterConfig.Mode"},
	} {
		var ce *conn.ConfigError
		if !errors.Is(tc.err, conn.ErrInvalidConfig) || !errors.As(tc.err, &ce) {
			t.Errorf("%s: %v", name, tc.err)
			continue
		}
		if !containsField(tc.err, tc.field) {
			t.Errorf("%s: %v does not name %s", name, tc.err, tc.field)
		}
	}
}

func containsField(err error, field string) bool {
	return err != nil && strings.Contains(err.Error(), field)
}
