package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/pg/internal/pgtest"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// TestExample runs the example on a real broker and database and checks
// that it prints what it promises.
func TestExample(t *testing.T) {
	b := warrentest.New(t)
	dsn := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, b.URL, dsn, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"order-3 rolled back: no order, no event", "billing invoiced", "absorbed by the inbox (1)", "3 invoices, applied 3 times in all"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
