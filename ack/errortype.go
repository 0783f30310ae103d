package ack

import "github.com/warrenmq/warren/internal/errkind"

// ErrorTyper is an error that names its own kind for ErrorType: warren's
// broker refusals name their AMQP reply ("NOT_FOUND", "ACCESS_REFUSED"),
// a recovered panic is "panic".
type ErrorTyper = errkind.Typer

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
func ErrorType(err error) string { return errkind.Type(err) }

// NamedError is a sentinel error whose ErrorType is name: warren's
// sentinels are made with it, so that error.type says "nacked" or
// "publish_timeout" rather than "_OTHER".
func NamedError(text, name string) error { return errkind.Named(text, name) }
