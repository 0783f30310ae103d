package workgroup

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWaitNamesWhatIsStillRunning(t *testing.T) {
	var g Group
	release := make(chan struct{})
	for range 2 {
		g.GoAs("consumer", "q", func() { <-release }) // reported as one name
	}
	g.Go("watcher", func() {})
	g.Close()
	if g.Go("late", func() { t.Error("ran after Close") }) {
		t.Fatal("Go after Close accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := g.Wait(ctx, "owner")
	var sr *StillRunningError
	if !errors.As(err, &sr) || !errors.Is(err, context.DeadlineExceeded) || len(sr.Running) != 1 || sr.Running[0] != "consumer q (2)" {
		t.Fatalf("Wait: %v", err)
	}
	close(release)
	if err := g.Wait(context.Background(), "owner"); err != nil {
		t.Fatal(err)
	}
	if len(g.Running()) != 0 {
		t.Fatalf("running %v after Wait", g.Running())
	}
}

// A Wait whose ctx has already ended still says nil when nothing runs.
func TestWaitWithAnEndedContext(t *testing.T) {
	var g Group
	g.Go("quick", func() {})
	for len(g.Running()) > 0 { // until its last line is behind it
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx, "owner"); err != nil {
		t.Fatalf("error with nothing running: %v", err)
	}
}
