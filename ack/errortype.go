package ack

import (
	"context"
	"errors"
	"fmt"
)

// ErrorTyper is an error that names its own kind for ErrorType: warren's
// broker refusals name their AMQP reply ("NOT_FOUND", "ACCESS_REFUSED"),
// a recovered panic is "panic".
type ErrorTyper interface {
	ErrorType() string
}

// ErrorType is a short name of what kind of error err is, low in
// cardinality, for dead-letter diagnostics and telemetry (error.type):
//
//   - the name the outermost error in the chain that implements
//     ErrorTyper gives itself;
//   - "timeout" or "canceled" for the context's errors;
//   - the Go type of the innermost error that has a type of its own
//     ("*json.SyntaxError");
//   - "_OTHER" when every error in the chain is a plain errors.New or
//     fmt.Errorf one (its type, *errors.errorString, would say nothing).
//
// "" for nil.
func ErrorType(err error) string {
	if err == nil {
		return ""
	}
	var named ErrorTyper
	if errors.As(err, &named) {
		if n := named.ErrorType(); n != "" {
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

// NamedError is a sentinel error whose ErrorType is name: warren's
// sentinels are made with it, so that error.type says "nacked" or
// "publish_timeout" rather than "_OTHER".
func NamedError(text, name string) error { return &namedError{text, name} }

type namedError struct{ text, name string }

func (e *namedError) Error() string     { return e.text }
func (e *namedError) ErrorType() string { return e.name }
