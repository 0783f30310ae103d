package outbox_test

import (
	"testing"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/internal/sweep"
	"github.com/warrenmq/warren/pg/outbox"
	"github.com/warrenmq/warren/warrentest"
)

// TestEveryExportedCallTakesNilAndZeroArguments: every exported function
// and method of the package, called with nil and zero arguments, returns an
// error or does what its doc says; none panics or blocks, none writes.
func TestEveryExportedCallTakesNilAndZeroArguments(t *testing.T) {
	b := warrentest.New(t)
	pool, _, ob := setup(t)
	s := sweep.New(t)
	s.Func("outbox.New", outbox.New)
	s.Func("outbox.NewRelay", outbox.NewRelay)
	s.Func("outbox.Pgx", outbox.Pgx)
	s.Methods("outbox.Outbox", func() any { return ob }, nil)
	pub := b.Publisher(warren.PublisherConfig{})
	s.Methods("outbox.Relay", func() any {
		r, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, Publisher: pub})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, nil)
	s.Methods("outbox.RelayConfig", func() any { return &outbox.RelayConfig{} }, nil)
	s.Complete(map[string]string{"outbox": "."}, nil)
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM warren_outbox").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows (%v) written by the sweep", n, err)
	}
}
