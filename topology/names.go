package topology

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// DefaultExchangeName is how the default exchange ("") is shown in logs,
// errors and span names.
const DefaultExchangeName = "amq.default"

// maxNameLen is AMQP's shortstr limit for entity names.
const maxNameLen = 255

// CheckName checks an AMQP name (of an exchange, a queue, a consumer tag)
// as every spec's Validate does: not empty unless allowEmpty, at most 255
// bytes, valid UTF-8. The error is a *SpecError of spec's field.
func CheckName(spec, field, name string, allowEmpty bool) error {
	switch {
	case name == "" && !allowEmpty:
		return &SpecError{Spec: spec, Field: field, Reason: "must not be empty"}
	case len(name) > maxNameLen:
		return &SpecError{Spec: spec, Field: field, Reason: fmt.Sprintf("%d bytes; at most %d", len(name), maxNameLen)}
	case !utf8.ValidString(name):
		return &SpecError{Spec: spec, Field: field, Reason: "not valid UTF-8"}
	}
	return nil
}

// builtIn reports names the broker owns: the default exchange and amq.*.
func builtIn(name string) bool { return name == "" || strings.HasPrefix(name, "amq.") }

func display(name string) string {
	if name == "" {
		return DefaultExchangeName
	}
	return name
}
