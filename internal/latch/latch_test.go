package latch

import (
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLatch: Done blocks until Set, whether the wait began before Set or
// after it; Set is idempotent.
func TestLatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Latch
		if l.IsSet() {
			t.Fatal("a new latch is set")
		}
		early := l.Done()
		woke := make(chan struct{})
		go func() { <-early; close(woke) }()
		synctest.Wait()
		select {
		case <-woke:
			t.Fatal("Done closed before Set")
		default:
		}
		l.Set()
		l.Set()
		<-woke
		if !l.IsSet() {
			t.Fatal("not set after Set")
		}
		<-l.Done() // after Set: closed at once
	})
	var never Latch
	never.Set() // set before anyone waited: no channel made
	if never.p.Load() != closed {
		t.Fatal("a channel was made for a latch nobody waited on")
	}
	<-never.Done()
}

// TestLatchRace: waiters and setters at once all see one channel closed
// once (run with -race).
func TestLatchRace(t *testing.T) {
	for range 100 {
		var l Latch
		done := make(chan struct{})
		for i := range 8 {
			go func() {
				if i%4 == 0 {
					l.Set()
				}
				<-l.Done()
				done <- struct{}{}
			}()
		}
		for range 8 {
			<-done
		}
	}
}
