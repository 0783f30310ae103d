package broker

import (
	"crypto/rand"
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
func generatedQueueName() string { return randomName("warren.gen-") }

// generatedTag is a consumer tag ("warren-" and 24 hex digits).
func generatedTag() string { return randomName("warren-") }

// randomName is prefix and 24 random hex digits, made in one allocation
// (a tag is made per consumer, and consumers are held by the thousand).
func randomName(prefix string) string {
	const digits = "0123456789abcdef"
	var b [12]byte
	_, _ = rand.Read(b[:])
	var sb strings.Builder
	sb.Grow(len(prefix) + 2*len(b))
	sb.WriteString(prefix)
	for _, x := range b {
		sb.WriteByte(digits[x>>4])
		sb.WriteByte(digits[x&0xf])
	}
	return sb.String()
}
