package conn

import (
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/errkind"
	"github.com/warrenmq/warren/internal/workgroup"
)

// Sentinels, for errors.Is. Errors returned by this package wrap one of them
// (or a typed error below) and keep the underlying *amqp091.Error in the chain.
var (
	// ErrClosed: the connection was closed (by Close, or because it gave up).
	// Closed is terminal; Conn.Err returns why it closed.
	ErrClosed = errkind.Named("conn: closed", "closed")
	// ErrNotOpen: the call needs Open first.
	ErrNotOpen = errkind.Named("conn: not open", "not_open")
	// ErrBlocked: the broker blocked the connection (memory or disk alarm)
	// and the caller's context ended before it was unblocked.
	ErrBlocked = errkind.Named("conn: blocked by the broker (resource alarm)", "blocked")
	// ErrGaveUp: the retry policy ran out of attempts or time.
	ErrGaveUp = errkind.Named("conn: gave up connecting", "gave_up")
	// ErrNotRetryable: the retry policy's filter refused to retry the error
	// (by default authentication and vhost access failures).
	ErrNotRetryable = errkind.Named("conn: error is not retryable", "not_retryable")
	// ErrConnectionLimit: the broker refused a connection because a vhost's
	// or a user's connection limit is reached (530 NOT_ALLOWED). Unlike a
	// refused login it is retried: a connection closing elsewhere frees a
	// place.
	ErrConnectionLimit = errkind.Named("conn: the broker's connection limit is reached", "connection_limit")
	// ErrQosUnsupported: Channel.Qos with a prefetch size or global,
	// which RabbitMQ refuses.
	ErrQosUnsupported = errkind.Named("conn: basic.qos prefetch-size and global are not supported by RabbitMQ", "qos_unsupported")
	// ErrTimeout: an AMQP call did not complete within Config.OperationTimeout;
	// the connection is treated as broken and replaced.
	ErrTimeout = errkind.Named("conn: operation timed out", "timeout")
	// ErrInvalidConfig: New was given a bad URL, option or Config. It is
	// the same error as every other package's ErrInvalidConfig.
	ErrInvalidConfig = configerr.ErrInvalidConfig

	// The broker refusing one operation on a channel (and closing that
	// channel, not the connection): one errors.Is target per refusal,
	// wherever it surfaces (a conn.Channel call, a declaration through
	// broker.Ops, a Publish). *RefusedError carries the code and the
	// broker's text.

	// ErrAccessRefused: 403 ACCESS_REFUSED, the user may not do this (no
	// configure, write or read permission on the entity, or a publish to an
	// internal exchange). Not a failed login: see IsAuthError.
	ErrAccessRefused = errkind.AccessRefused
	// ErrNotFound: 404 NOT_FOUND, the entity does not exist.
	ErrNotFound = errkind.NotFound
	// ErrResourceLocked: 405 RESOURCE_LOCKED, the entity is in exclusive
	// use by another connection.
	ErrResourceLocked = errkind.ResourceLocked
	// ErrPreconditionFailed: 406 PRECONDITION_FAILED, the entity exists
	// with other properties, or a message broke a broker rule.
	ErrPreconditionFailed = errkind.PreconditionFailed
)

// RefusedError is the broker refusing an operation with a reply code: a
// channel call (or the connection) closed by the broker, and every refusal
// the layers above meet (a declaration, a consume, a publish), which name
// the operation and the entity. It matches the sentinel of its code (403
// ErrAccessRefused, 404 ErrNotFound, 405 ErrResourceLocked, 406
// ErrPreconditionFailed) and keeps the *amqp091.Error in the chain.
type RefusedError struct {
	// Op and Entity say what was refused ("declare", `queue "orders"`);
	// empty for a bare channel call.
	Op, Entity string
	Code       int
	Text       string
	Err        error
}

func (e *RefusedError) Error() string {
	if e.Op != "" {
		return fmt.Sprintf("%s %s: %d %s", e.Op, e.Entity, e.Code, e.Text)
	}
	return fmt.Sprintf("conn: broker refused: %d %s", e.Code, e.Text)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Is matches the sentinel of the reply code.
func (e *RefusedError) Is(target error) bool {
	s := errkind.Refusal(e.Code)
	return s != nil && s == target
}

// refusal wraps an error the broker sent in a *RefusedError; any other
// error is returned as it is.
func refusal(err error) error {
	ae, ok := err.(*amqp.Error)
	if !ok || ae == nil || !ae.Server {
		return err
	}
	return &RefusedError{Code: ae.Code, Text: ae.Reason, Err: ae}
}

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

// StillRunningError is a Close (of a connection, Publisher, Subscriber,
// Requester, Router, broker.Ops) whose deadline passed with goroutines of
// its owner still running: it names them, and matches the context's error.
type StillRunningError = workgroup.StillRunningError

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

// AuthError is a failed login: the broker refused the credentials (403
// ACCESS_REFUSED, or the socket closed at the authentication step) or the
// vhost (530 NOT_ALLOWED) while the connection was being opened.
type AuthError struct {
	Err error
}

func (e *AuthError) Error() string { return fmt.Sprintf("conn: login refused: %v", e.Err) }

func (e *AuthError) Unwrap() error { return e.Err }

// IsAuthError reports whether err is a failed login (an *AuthError in its
// chain): wrong credentials, or a user without access to the vhost, when a
// connection was opened. A refusal of one operation on an open connection
// (no permission on an exchange: 403 on a channel) is not one; it matches
// ErrAccessRefused instead.
func IsAuthError(err error) bool {
	var ae *AuthError
	return errors.As(err, &ae)
}

// loginRefusal is the error of a failed handshake as an *AuthError when it
// is a login refusal, err otherwise.
func loginRefusal(err error) error {
	var ae *amqp.Error
	if connectionLimited(err) {
		return fmt.Errorf("%w: %w", ErrConnectionLimit, refusal(err))
	}
	if errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) ||
		(errors.As(err, &ae) && ae.Server && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed)) {
		return &AuthError{Err: err}
	}
	return err
}

// connectionLimited reports RabbitMQ refusing connection.open because a
// vhost's or a user's connection limit is reached. It sends 530 NOT_ALLOWED,
// the code of a refused vhost, and only its text tells the two apart
// ("access to vhost 'v' refused for user 'u': connection limit (1) is
// reached", "connection refused for user 'u': user connection limit (1) is
// reached"; rabbit_reader, 3.x and 4.x).
func connectionLimited(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Server && ae.Code == amqp.NotAllowed && strings.Contains(ae.Reason, "connection limit")
}

// refusedByBroker: a login refusal the broker sent (403 or 530). Retrying
// cannot help.
func refusedByBroker(err error) bool {
	var ae *amqp.Error
	return IsAuthError(err) && errors.As(err, &ae) && ae.Server
}

// ambiguousAuth: a login refusal that is amqp091-go's ErrCredentials or
// ErrVhost, returned when the socket closed at the authentication or vhost
// step without a reply. RabbitMQ does that on bad credentials (amqp091-go
// does not advertise authentication_failure_close), and so does a network
// blip at that moment: one such failure proves nothing, several in a row
// are a refusal.
func ambiguousAuth(err error) bool {
	return IsAuthError(err) && (errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost))
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

// ErrorType names the refusal by its AMQP reply (ack.ErrorType).
func (e *RefusedError) ErrorType() string { return errkind.ReplyName(e.Code) }

// ErrorType is the broker's reply when it sent one, "auth" otherwise
// (ack.ErrorType).
func (e *AuthError) ErrorType() string {
	var ae *amqp.Error
	if errors.As(e.Err, &ae) && ae.Server {
		return errkind.ReplyName(ae.Code)
	}
	return "auth"
}
