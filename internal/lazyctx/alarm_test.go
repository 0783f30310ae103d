package lazyctx

import (
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The alarm rings at the earliest time asked for, even when it was asked
// for after a later one.
func TestAlarmRingsAtTheEarliestTimeAskedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		start := time.Now()
		late := a.Ring(start.Add(2 * time.Second))
		early := a.Ring(start.Add(time.Second))
		if late != early {
			t.Fatal("two waits before a firing hold different rings")
		}
		<-early // on the bubble's clock: rang exactly at 1s, not before, not at 2s
		if got := time.Since(start); got != time.Second {
			t.Fatalf("rang after %v, want 1s", got)
		}
	})
}

// A ring asked for after the alarm fired is a new one, set for its own
// time: the alarm forgets the times of the calls it woke.
func TestAlarmSetsItselfAgainAfterItFires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		start := time.Now()
		first := a.Ring(start.Add(time.Second))
		<-first
		second := a.Ring(start.Add(3 * time.Second))
		if isClosed(second) {
			t.Fatal("the ring asked for after a firing is closed already")
		}
		<-second
		if got := time.Since(start); got != 3*time.Second {
			t.Fatalf("the second ring came at %v, want 3s", got)
		}
	})
}

// A time already past rings at once.
func TestAlarmRingsAtOnceForATimePast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		start := time.Now()
		<-a.Ring(start.Add(-time.Second))
		if time.Since(start) != 0 {
			t.Fatal("a past time waited")
		}
	})
}

// Stop wakes whoever waits (to wait again) and lets go of the timer.
func TestAlarmStopWakesItsWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		ring := a.Ring(time.Now().Add(time.Hour))
		a.Stop()
		if !isClosed(ring) {
			t.Fatal("Stop left a waiter asleep")
		}
		again := a.Ring(time.Now().Add(time.Second))
		<-again
	})
}

// Many calls with deadlines in any order, each waiting the way a publish
// does (Until, then Err when the ring closes): every one ends exactly at
// its own deadline, none later (a lost wake-up), none earlier. The calls
// start together, their timeouts in random order: the alarm is moved
// earlier, fires, and is set again by the calls it woke early.
func TestEveryCallEndsAtItsOwnDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var a Alarm
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 200 {
			timeout := time.Duration(1+rand.IntN(5000)) * time.Millisecond
			wg.Go(func() {
				c := Bound(t.Context(), timeout, &a)
				defer c.Cancel()
				done, ring := Until(c)
				for {
					select {
					case <-done:
						t.Errorf("call %d: its parent ended", i)
						return
					case <-ring:
					}
					if c.Err() != nil {
						break
					}
					done, ring = Until(c)
				}
				if got, want := time.Since(start), timeout; got != want {
					t.Errorf("call %d ended at %v, want %v", i, got, want)
				}
			})
		}
		wg.Wait()
	})
}
