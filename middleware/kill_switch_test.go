package middleware_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/middleware"
)

// pauser records the KillSwitch's calls.
type pauser struct {
	mu             sync.Mutex
	pauses, resume int
}

func (p *pauser) Pause(context.Context) error  { p.mu.Lock(); p.pauses++; p.mu.Unlock(); return nil }
func (p *pauser) Resume(context.Context) error { p.mu.Lock(); p.resume++; p.mu.Unlock(); return nil }
func (p *pauser) counts() (int, int)           { p.mu.Lock(); defer p.mu.Unlock(); return p.pauses, p.resume }

func run(k *middleware.KillSwitch, err error) (calls int, out error) {
	h := func(*message.Message) ([]*message.Message, error) { calls++; return nil, err }
	_, out = k.Middleware(h)(message.NewMessage("m", nil))
	return calls, out
}

// The switch trips at the failure rate once activated, gives back what
// arrives while open without running the handler, pauses, tries one
// message after RestartTimeout and closes on its success; a failed trial
// trips it again; a permanent failure (a bad message) counts for nothing.
func TestKillSwitchTripsPausesAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &pauser{}
		var changes []string
		k, err := middleware.NewKillSwitch(middleware.KillSwitchConfig{Pauser: p, RestartTimeout: time.Minute,
			OnStateChange: func(from, to middleware.KillSwitchState, _ error) { changes = append(changes, to.String()) }})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		down := errors.New("database down")
		for range 20 {
			if _, err := run(k, ack.Permanent(errors.New("bad message"))); ack.KindOf(err) != ack.PermanentKind {
				t.Fatalf("a permanent failure: %v", err)
			}
		}
		for i := range 9 {
			if _, err := run(k, down); errors.Is(err, middleware.ErrKillSwitchOpen) {
				t.Fatalf("tripped at failure %d, before the activation threshold", i+1)
			}
		}
		if _, err := run(k, down); !errors.Is(err, middleware.ErrKillSwitchOpen) || ack.KindOf(err) != ack.RequeueKind {
			t.Fatalf("the 10th failure: %v, want it back to the queue (kill switch open)", err)
		}
		synctest.Wait()
		if k.State() != middleware.KillSwitchOpen {
			t.Fatalf("state %v", k.State())
		}
		if paused, _ := p.counts(); paused != 1 {
			t.Fatalf("paused %d times", paused)
		}
		if calls, err := run(k, nil); calls != 0 || !errors.Is(err, middleware.ErrKillSwitchOpen) {
			t.Fatalf("while open: %d calls, %v", calls, err)
		}
		time.Sleep(time.Minute) // the bubble's clock past RestartTimeout: no real wait
		synctest.Wait()
		if _, resumed := p.counts(); resumed != 1 || k.State() != middleware.KillSwitchHalfOpen {
			t.Fatalf("after RestartTimeout: %d resumes, state %v", resumed, k.State())
		}
		if _, err := run(k, down); !errors.Is(err, middleware.ErrKillSwitchOpen) || k.State() != middleware.KillSwitchOpen {
			t.Fatalf("a failed trial: %v, state %v", err, k.State())
		}
		time.Sleep(time.Minute) // the bubble's clock past RestartTimeout: no real wait
		synctest.Wait()
		if calls, err := run(k, nil); calls != 1 || err != nil || k.State() != middleware.KillSwitchClosed {
			t.Fatalf("a good trial: %d calls, %v, state %v", calls, err, k.State())
		}
		want := []string{"open", "half_open", "open", "half_open", "closed"}
		if len(changes) != len(want) {
			t.Fatalf("changes %v, want %v", changes, want)
		}
		for i := range want {
			if changes[i] != want[i] {
				t.Fatalf("changes %v, want %v", changes, want)
			}
		}
	})
}

// DependencyDown trips at once, whatever the count; the others wait for a
// half-open trial and follow its outcome.
func TestKillSwitchDependencyDownAndTheTrialGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, err := middleware.NewKillSwitch(middleware.KillSwitchConfig{RestartTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if _, err := run(k, middleware.DependencyDown(errors.New("no db"))); !errors.Is(err, middleware.ErrKillSwitchOpen) || !errors.Is(err, middleware.ErrDependencyDown) {
			t.Fatalf("DependencyDown: %v", err)
		}
		time.Sleep(time.Second) // the bubble's clock past RestartTimeout: no real wait
		synctest.Wait()
		release := make(chan struct{})
		trialDone := make(chan error)
		go func() {
			_, err := k.Middleware(func(*message.Message) ([]*message.Message, error) { <-release; return nil, nil })(message.NewMessage("trial", nil))
			trialDone <- err
		}()
		synctest.Wait() // the trial runs
		waiter := make(chan int)
		go func() {
			calls, _ := run(k, nil)
			waiter <- calls
		}()
		synctest.Wait() // the other waits for the trial
		close(release)
		if err := <-trialDone; err != nil {
			t.Fatal(err)
		}
		if calls := <-waiter; calls != 1 {
			t.Fatalf("after a good trial the waiting message ran %d times", calls)
		}
	})
}

func TestKillSwitchConfigIsValidated(t *testing.T) {
	for _, cfg := range []middleware.KillSwitchConfig{{ActivationThreshold: -1}, {TripThreshold: 1.5}, {TrackingPeriod: -time.Second}, {RestartTimeout: -1}} {
		if _, err := middleware.NewKillSwitch(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
