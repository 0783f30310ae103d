package conn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/retry"
)

func waits(p RetryPolicy, n int) []time.Duration {
	b := p.newBackOff()
	var out []time.Duration
	for i := 0; i < n; i++ {
		d := b.NextBackOff()
		if d < 0 {
			break
		}
		out = append(out, d)
	}
	return out
}

func TestRetryPolicies(t *testing.T) {
	if got := waits(defaultFirstConnect, 5); len(got) != 0 {
		t.Fatalf("MaxAttempts 1 retries: %v", got)
	}
	fixed := retry.Backoff{InitialInterval: time.Second, Multiplier: 1, MaxInterval: time.Second}
	if got := waits(RetryPolicy{MaxAttempts: 3, Backoff: fixed, NoJitter: true}, 5); fmt.Sprint(got) != "[1s 1s]" {
		t.Fatalf("MaxAttempts 3: %v, want two waits", got)
	}
	if got := waits(RetryPolicy{Backoff: fixed}, 50); len(got) != 50 {
		t.Fatalf("MaxAttempts 0 stopped after %d", len(got))
	}
	exp := waits(RetryPolicy{FirstRetryImmediate: true, NoJitter: true, Backoff: retry.Backoff{InitialInterval: 10 * time.Millisecond, MaxInterval: 40 * time.Millisecond}}, 6)
	if fmt.Sprint(exp) != "[0s 10ms 20ms 40ms 40ms 40ms]" {
		t.Fatalf("exponential: %v", exp)
	}
	if got := waits(RetryPolicy{MaxAttempts: 2, FirstRetryImmediate: true}, 5); fmt.Sprint(got) != "[0s]" {
		t.Fatalf("MaxAttempts 2 with an immediate retry: %v", got)
	}
	def := waits(defaultReconnect, 100)
	if len(def) != 100 || def[0] != 0 {
		t.Fatalf("default reconnect must be forever with an immediate first retry: %v", def[:3])
	}
	for _, d := range def {
		if d > 5*time.Second*3/2 {
			t.Fatalf("default reconnect wait %v above its cap", d)
		}
	}
	// MaxElapsedTime is measured on backoff's clock (time.Now): the bubble's
	// fake clock moves it past the limit without waiting.
	synctest.Test(t, func(t *testing.T) {
		b := RetryPolicy{MaxElapsedTime: time.Millisecond, Backoff: retry.Backoff{InitialInterval: time.Millisecond}}.newBackOff()
		time.Sleep(2 * time.Millisecond)
		if d := b.NextBackOff(); d >= 0 {
			t.Fatalf("MaxElapsedTime passed but NextBackOff = %v", d)
		}
	})
}

func TestRetryPolicyProblemsAreNamed(t *testing.T) {
	err := (&Config{Reconnect: RetryPolicy{MaxAttempts: -1, Backoff: retry.Backoff{Multiplier: 0.5}}}).Validate()
	for _, field := range []string{"conn.Config.Reconnect.MaxAttempts", "conn.Config.Reconnect.Backoff.Multiplier"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate() = %v: %s not named", err, field)
		}
	}
}

func TestRetryFilter(t *testing.T) {
	p := RetryPolicy{Backoff: retry.Backoff{InitialInterval: time.Second, Multiplier: 1, MaxInterval: time.Second}}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{loginRefusal(&amqp.Error{Code: amqp.AccessRefused, Reason: "refused", Server: true}), false},
		{loginRefusal(&amqp.Error{Code: amqp.NotAllowed, Reason: "vhost", Server: true}), false},
		{&DialError{Err: loginRefusal(&amqp.Error{Code: amqp.AccessRefused, Server: true})}, false},
		// amqp091's fallback when the socket closes mid-handshake: a
		// network failure, retried.
		{loginRefusal(amqp.ErrCredentials), true},
		{loginRefusal(amqp.ErrVhost), true},
		// A 403 on a channel (a restore hook's declare, say) is no login
		// refusal: it never ends the connection's retries.
		{refusal(&amqp.Error{Code: amqp.AccessRefused, Reason: "no write", Server: true}), true},
		{context.Canceled, false},
		{errors.New("connection refused"), true},
		{&amqp.Error{Code: amqp.ConnectionForced}, true},
	} {
		if got := p.isRetryable(tc.err); got != tc.want {
			t.Errorf("isRetryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	p.Retryable = func(error) bool { return true }
	if !p.isRetryable(loginRefusal(&amqp.Error{Code: amqp.AccessRefused, Server: true})) {
		t.Fatal("a Retryable that retries everything refused an auth error")
	}
}

// TestAuthErrorMeansALoginOnly: IsAuthError answers for a failed login, never
// for a refusal of one operation; the refusal matches its own sentinel.
func TestAuthErrorMeansALoginOnly(t *testing.T) {
	channel403 := refusal(&amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - write access to exchange 'x' refused", Server: true})
	for _, tc := range []struct {
		name          string
		err           error
		auth, refused bool
	}{
		{"login 403 sent by the broker", loginRefusal(&amqp.Error{Code: amqp.AccessRefused, Server: true}), true, false},
		{"vhost 530", loginRefusal(&amqp.Error{Code: amqp.NotAllowed, Server: true}), true, false},
		{"socket closed at authentication", &DialError{Err: loginRefusal(amqp.ErrCredentials)}, true, false},
		{"403 on a channel", channel403, false, true},
		{"403 on a channel, wrapped", fmt.Errorf("declare: %w", channel403), false, true},
		{"dial error that is no login", loginRefusal(errors.New("connection refused")), false, false},
	} {
		if got := IsAuthError(tc.err); got != tc.auth {
			t.Errorf("%s: IsAuthError = %v, want %v", tc.name, got, tc.auth)
		}
		if got := errors.Is(tc.err, ErrAccessRefused); got != tc.refused {
			t.Errorf("%s: errors.Is(ErrAccessRefused) = %v, want %v", tc.name, got, tc.refused)
		}
	}
}
