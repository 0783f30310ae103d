package broker

import (
	"crypto/rand"
	"encoding/hex"
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

// generatedQueueName is a client-side queue name ("warren.gen-" and 24 hex
// digits). Unlike the broker's amq.gen-* names it can be declared again
// after a reconnect.
func generatedQueueName() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "warren.gen-" + hex.EncodeToString(b[:])
}
