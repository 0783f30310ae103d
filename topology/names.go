package topology

import (
	"strings"

	"github.com/warrenmq/warren/internal/amqpname"
)

// DefaultExchangeName is how the default exchange ("") is shown in logs,
// errors and span names.
const DefaultExchangeName = "amq.default"

// checkName checks an AMQP name (of an exchange, a queue) as every spec's
// Validate does (internal/amqpname); the error is a *SpecError of spec's
// field.
func checkName(spec, field, name string, allowEmpty bool) error {
	if reason := amqpname.Problem(name, allowEmpty); reason != "" {
		return &SpecError{Spec: spec, Field: field, Reason: reason}
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
