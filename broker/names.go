package broker

import (
	"strings"

	"github.com/warrenmq/warren/topology"
)

// builtIn reports names the broker owns: the default exchange and amq.*.
func builtIn(name string) bool { return name == "" || strings.HasPrefix(name, "amq.") }

// display shows the default exchange by its name.
func display(name string) string {
	if name == "" {
		return topology.DefaultExchangeName
	}
	return name
}
