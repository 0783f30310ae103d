// Package errkind is warren's one error vocabulary below the packages that
// name it publicly: named sentinels (whose error.type is their name), the
// broker's refusals by reply code, and ErrorType, the low-cardinality name
// of any error. Each sentinel has one public name, in the lowest package
// that returns it (conn.ErrNotFound, broker.ErrUnroutable, ...); this
// package only holds the values, so that conn and telemetry need neither
// ack nor Watermill.
package errkind

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Typer is an error that names its own kind for Type.
type Typer interface {
	ErrorType() string
}

// Named is a sentinel error whose ErrorType is name.
func Named(text, name string) error { return &named{text, name} }

type named struct{ text, name string }

func (e *named) Error() string     { return e.text }
func (e *named) ErrorType() string { return e.name }

// Type is a short name of what kind of error err is, low in cardinality,
// for dead-letter diagnostics and telemetry (error.type):
//
//   - the name the outermost error in the chain that implements Typer
//     gives itself;
//   - "timeout" or "canceled" for the context's errors;
//   - the Go type of the innermost error that has a type of its own
//     ("*json.SyntaxError");
//   - "_OTHER" when every error in the chain is a plain errors.New or
//     fmt.Errorf one (its type, *errors.errorString, would say nothing).
//
// "" for nil.
func Type(err error) string {
	if err == nil {
		return ""
	}
	var t Typer
	if errors.As(err, &t) {
		if n := t.ErrorType(); n != "" {
			return n
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	if t := innermostTyped(err); t != "" {
		return t
	}
	return "_OTHER"
}

// innermostTyped is the type of the deepest error in err's chain that is not
// a plain text or wrapper, "" when there is none.
func innermostTyped(err error) string {
	found := ""
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if t := fmt.Sprintf("%T", e); !generic[t] {
			found = t
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return found
}

// generic are the error types that carry only text or wrap others.
var generic = map[string]bool{
	"*errors.errorString": true,
	"*fmt.wrapError":      true,
	"*fmt.wrapErrors":     true,
	"*errors.joinError":   true,
	"*ack.kindError":      true,
}

// The broker refusing one operation on a channel (conn exports them).
var (
	AccessRefused      = Named("access refused (403)", "ACCESS_REFUSED")
	NotFound           = Named("not found (404)", "NOT_FOUND")
	ResourceLocked     = Named("resource locked (405)", "RESOURCE_LOCKED")
	PreconditionFailed = Named("precondition failed (406)", "PRECONDITION_FAILED")
)

// Refusal is the sentinel of a channel-level reply code (403, 404, 405,
// 406), nil for any other code.
func Refusal(code int) error {
	switch code {
	case amqp.AccessRefused:
		return AccessRefused
	case amqp.NotFound:
		return NotFound
	case amqp.ResourceLocked:
		return ResourceLocked
	case amqp.PreconditionFailed:
		return PreconditionFailed
	}
	return nil
}

// ErrHandlerNacked is the reason of a message its handler nacked without
// saying why. It names no error type of its own (error.type "_OTHER", like
// any handler's failure): "nacked" is the broker refusing a publish
// (broker.ErrNacked).
var ErrHandlerNacked = errors.New("warren: the handler nacked the message")

// ReplyName is the AMQP name of a reply code ("NOT_FOUND"), or "AMQP_<code>".
func ReplyName(code int) string {
	if n, ok := replyNames[code]; ok {
		return n
	}
	return fmt.Sprintf("AMQP_%d", code)
}

var replyNames = map[int]string{
	amqp.ContentTooLarge:    "CONTENT_TOO_LARGE",
	amqp.NoRoute:            "NO_ROUTE",
	amqp.NoConsumers:        "NO_CONSUMERS",
	amqp.ConnectionForced:   "CONNECTION_FORCED",
	amqp.InvalidPath:        "INVALID_PATH",
	amqp.AccessRefused:      "ACCESS_REFUSED",
	amqp.NotFound:           "NOT_FOUND",
	amqp.ResourceLocked:     "RESOURCE_LOCKED",
	amqp.PreconditionFailed: "PRECONDITION_FAILED",
	amqp.FrameError:         "FRAME_ERROR",
	amqp.SyntaxError:        "SYNTAX_ERROR",
	amqp.CommandInvalid:     "COMMAND_INVALID",
	amqp.ChannelError:       "CHANNEL_ERROR",
	amqp.UnexpectedFrame:    "UNEXPECTED_FRAME",
	amqp.ResourceError:      "RESOURCE_ERROR",
	amqp.NotAllowed:         "NOT_ALLOWED",
	amqp.NotImplemented:     "NOT_IMPLEMENTED",
	amqp.InternalError:      "INTERNAL_ERROR",
}
