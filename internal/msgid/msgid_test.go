package msgid

import (
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// v4 is a version 4 UUID's text in lower case, as Watermill's NewUUID
// writes it.
var v4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestNewIsAVersion4UUID: the text form Watermill's NewUUID has (it is
// checked too), the version and variant bits set, every other bit varying.
func TestNewIsAVersion4UUID(t *testing.T) {
	if w := watermill.NewUUID(); !v4.MatchString(w) {
		t.Fatalf("Watermill's NewUUID %q does not match %v", w, v4)
	}
	var somewhere, everywhere [16]byte // bits set in some id, in every id
	for i := range everywhere {
		everywhere[i] = 0xff
	}
	for range 2000 {
		s := New()
		if !v4.MatchString(s) {
			t.Fatalf("%q is not a version 4 UUID", s)
		}
		u, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range u {
			somewhere[i] |= b
			everywhere[i] &= b
		}
	}
	// The bits fixed by the version and the variant: 0100 in byte 6's
	// high half, 10 in byte 8's top two.
	wantSomewhere := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x4f, 0xff, 0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	wantEverywhere := [16]byte{6: 0x40, 8: 0x80}
	if somewhere != wantSomewhere || everywhere != wantEverywhere {
		t.Fatalf("bits set in some id %x (want %x), in every id %x (want %x)", somewhere, wantSomewhere, everywhere, wantEverywhere)
	}
}

// TestNewDoesNotRepeat: 100,000 ids from 4 goroutines, no two alike.
func TestNewDoesNotRepeat(t *testing.T) {
	const each, workers = 25000, 4
	out := make(chan []string, workers)
	for range workers {
		go func() {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = New()
			}
			out <- ids
		}()
	}
	seen := make(map[string]bool, each*workers)
	for range workers {
		for _, id := range <-out {
			if seen[id] {
				t.Fatalf("%s twice", id)
			}
			seen[id] = true
		}
	}
}

// BenchmarkNew is New beside Watermill's NewUUID, which it replaces.
//
//	go test -run '^$' -bench . -benchmem ./internal/msgid
func BenchmarkNew(b *testing.B) {
	b.Run("msgid", func(b *testing.B) {
		for b.Loop() {
			_ = New()
		}
	})
	b.Run("watermill.NewUUID", func(b *testing.B) {
		for b.Loop() {
			_ = watermill.NewUUID()
		}
	})
}
