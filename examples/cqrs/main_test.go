package main

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/warrentest"
)

func TestMain(m *testing.M) { warrentest.Main(m) }

// TestCQRSOnWarren runs the example's command bus, command processor, event
// bus and two event groups on a real broker: run fails unless every group
// handled every event.
func TestCQRSOnWarren(t *testing.T) {
	b := warrentest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, b.Conn(conn.Config{})); err != nil {
		t.Fatal(err)
	}
}
