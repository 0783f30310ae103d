package conn

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/configerr"
)

// Sentinels, for errors.Is. Errors returned by this package wrap one of them
// (or a typed error below) and keep the underlying *amqp091.Error in the chain.
var (
	// ErrClosed: the connection was closed (by Close, or because it gave up).
	// Closed is terminal; Conn.Err returns why it closed.
	ErrClosed = errors.New("conn: closed")
	// ErrNotOpen: the call needs Open first.
	ErrNotOpen = errors.New("conn: not open")
	// ErrBlocked: the broker blocked the connection (memory or disk alarm)
	// and the caller's context ended before it was unblocked.
	ErrBlocked = errors.New("conn: blocked by the broker (resource alarm)")
	// ErrGaveUp: the retry policy ran out of attempts or time.
	ErrGaveUp = errors.New("conn: gave up connecting")
	// ErrNotRetryable: the retry policy's filter refused to retry the error
	// (by default authentication and vhost access failures).
	ErrNotRetryable = errors.New("conn: error is not retryable")
	// ErrTimeout: an AMQP call did not complete within Config.OperationTimeout;
	// the connection is treated as broken and replaced.
	ErrTimeout = errors.New("conn: operation timed out")
	// ErrInvalidConfig: New was given a bad URL, option or Config. It is
	// the same error as every other package's ErrInvalidConfig.
	ErrInvalidConfig = configerr.ErrInvalidConfig
)

// URLError names the part of a URL that is wrong. It never holds the
// password.
type URLError struct {
	// Param is the URL part or query parameter at fault ("scheme", "host",
	// "heartbeat", ...).
	Param string
	// Value is the offending value (never a password).
	Value string
	// Reason says what is wrong.
	Reason string
}

func (e *URLError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("conn: invalid URL %s: %s", e.Param, e.Reason)
	}
	return fmt.Sprintf("conn: invalid URL %s %q: %s", e.Param, e.Value, e.Reason)
}

// Is makes every URLError match ErrInvalidConfig.
func (e *URLError) Is(target error) bool { return target == ErrInvalidConfig }

// ConfigError names a Config field that is wrong ("conn.Config.Heartbeat");
// it matches ErrInvalidConfig. Every package of warren reports bad
// configuration with this one type.
type ConfigError = configerr.Error

// DialError is one failed connection attempt.
type DialError struct {
	// Endpoint is the address tried, without credentials.
	Endpoint string
	// Attempt counts from 1 within the current policy run.
	Attempt int
	Err     error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("conn: attempt %d to %s: %v", e.Attempt, e.Endpoint, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// GiveUpError is why a connection ended in Closed on its own: the last
// attempt's error and how many attempts were made. It matches ErrClosed and
// either ErrGaveUp or ErrNotRetryable.
type GiveUpError struct {
	Attempts  int
	Retryable bool
	Err       error
}

func (e *GiveUpError) Error() string {
	why := "retries exhausted"
	if !e.Retryable {
		why = "not retryable"
	}
	return fmt.Sprintf("conn: gave up after %d attempt(s) (%s): %v", e.Attempts, why, e.Err)
}

func (e *GiveUpError) Unwrap() []error {
	kind := ErrGaveUp
	if !e.Retryable {
		kind = ErrNotRetryable
	}
	return []error{ErrClosed, kind, e.Err}
}

// IsAuthError reports whether err is the broker refusing the credentials
// (403 ACCESS_REFUSED) or the vhost (530 NOT_ALLOWED), whether it said so
// (a refusal it sent) or it looks so (see ambiguousAuth).
func IsAuthError(err error) bool { return refusedByBroker(err) || ambiguousAuth(err) }

// refusedByBroker: a 403 or 530 the broker sent. Retrying cannot help.
func refusedByBroker(err error) bool {
	var ae *amqp.Error
	if !errors.As(err, &ae) || !ae.Server {
		return false
	}
	return ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed
}

// ambiguousAuth: amqp091-go's ErrCredentials or ErrVhost, returned when the
// socket closed at the authentication or vhost step without a reply.
// RabbitMQ does that on bad credentials (amqp091-go does not advertise
// authentication_failure_close), and so does a network blip at that moment:
// one such failure proves nothing, several in a row are a refusal.
func ambiguousAuth(err error) bool {
	return errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost)
}

// ambiguousAuthLimit is how many ambiguous authentication failures in a row
// end the retries.
const ambiguousAuthLimit = 3

// closedError is what calls return once the connection is closed: ErrClosed,
// with the cause in the chain when there is one.
func closedError(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		if cause == nil {
			return ErrClosed
		}
		return cause
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}
