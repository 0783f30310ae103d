// Package msgid makes the ids warren gives messages that arrive without
// one, and the correlation ids of its requests and replies.
//
// An id is a random (version 4) UUID in its text form, as Watermill's
// NewUUID makes, from math/rand/v2's generator instead of crypto/rand.
// Watermill's reads the operating system's randomness for every id (a
// system call, or the vDSO's generator) and encodes it a group at a time:
// about 700 instructions and two allocations a consumed message that
// carries no message id (bench/: a raw producer's messages). The runtime's
// generator is ChaCha8, seeded from the operating system's randomness per
// thread, so two ids collide as rarely as two of Watermill's. Nothing
// needs an id to be unpredictable: it names a message, it guards nothing.
package msgid

import (
	"encoding/binary"
	"math/rand/v2"
)

// New returns a random version 4 UUID, as xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx
// in lower case (y is one of 8, 9, a, b).
func New() string {
	var u [16]byte
	binary.BigEndian.PutUint64(u[:8], rand.Uint64())
	binary.BigEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122's variant
	s := [36]byte{8: '-', 13: '-', 18: '-', 23: '-'}
	for i, b := range u {
		at := int(textAt[i])
		s[at], s[at+1] = digits[b>>4], digits[b&0x0f]
	}
	return string(s[:])
}

// textAt is where each byte's two digits go in the text, between the
// dashes.
var textAt = [16]byte{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

const digits = "0123456789abcdef"
