// Package amqpname checks AMQP names (of exchanges, queues, consumer tags)
// as every spec's Validate does, for the data package and the engine alike.
package amqpname

import (
	"fmt"
	"unicode/utf8"
)

// MaxLen is AMQP's shortstr limit for entity names.
const MaxLen = 255

// Problem is what is wrong with name, "" when nothing: empty (unless
// allowEmpty), over 255 bytes, or not valid UTF-8.
func Problem(name string, allowEmpty bool) string {
	switch {
	case name == "" && !allowEmpty:
		return "must not be empty"
	case len(name) > MaxLen:
		return fmt.Sprintf("%d bytes; at most %d", len(name), MaxLen)
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	}
	return ""
}
