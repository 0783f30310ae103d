package msgid

import (
	"crypto/rand"
	"io"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/google/uuid"
)

// countingReader counts the reads made of a random source.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// TestPitfallWatermillsNewUUIDReadsTheSystemsRandomnessForEveryID
// (PITFALLS 56): watermill.NewUUID is google/uuid's New, which reads its
// random source (crypto/rand: the operating system's randomness) once for
// every id and makes two allocations. google/uuid's pool of random bytes
// is a process-wide switch (EnableRandPool) a library has no business
// flipping for its users. New reads no source and makes one allocation,
// its string.
func TestPitfallWatermillsNewUUIDReadsTheSystemsRandomnessForEveryID(t *testing.T) {
	// google/uuid's source is process-wide too: it is swapped for a
	// counting one only for this test, which runs alone (not parallel).
	src := &countingReader{r: rand.Reader}
	uuid.SetRand(src)
	defer uuid.SetRand(nil) // crypto/rand again
	const ids = 100
	for range ids {
		_ = watermill.NewUUID()
	}
	if src.reads != ids {
		t.Fatalf("watermill.NewUUID read its random source %d times for %d ids", src.reads, ids)
	}
	for range ids {
		_ = New()
	}
	if src.reads != ids {
		t.Fatalf("New read google/uuid's random source (%d reads after %d of Watermill's)", src.reads-ids, ids)
	}
	if a := testing.AllocsPerRun(100, func() { _ = watermill.NewUUID() }); a != 2 {
		t.Errorf("watermill.NewUUID: %v allocations an id, want the 2 PITFALLS 56 names", a)
	}
	if a := testing.AllocsPerRun(100, func() { _ = New() }); a != 1 {
		t.Errorf("New: %v allocations an id, want 1 (its string)", a)
	}
}
