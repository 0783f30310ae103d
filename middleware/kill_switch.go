package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/internal/logx"
	"github.com/warrenmq/warren/telemetry"
)

// ErrDependencyDown is what a handler returns (wrapped: DependencyDown)
// when what it needs is down (its database, an API): a KillSwitch trips at
// once, and the message goes back to the queue, neither retried nor
// dead-lettered.
var ErrDependencyDown = ack.NamedError("warren: a dependency of the handler is down", "dependency_down")

// ErrKillSwitchOpen is the reason of a message a tripped KillSwitch gave
// back to the queue without running the handler.
var ErrKillSwitchOpen = ack.NamedError("warren: the kill switch is open: the message goes back to the queue", "kill_switch_open")

// DependencyDown wraps err as a dependency outage (ErrDependencyDown): a
// KillSwitch trips at once. Without one it is an ordinary failure.
func DependencyDown(err error) error {
	if err == nil {
		err = errors.New("dependency down")
	}
	return fmt.Errorf("%w: %w", ErrDependencyDown, err)
}

// KillSwitchState is where a KillSwitch is.
type KillSwitchState int

const (
	// KillSwitchClosed: messages are handled, outcomes counted.
	KillSwitchClosed KillSwitchState = iota
	// KillSwitchOpen: tripped; consumption paused, a message that arrives
	// anyway goes back to the queue without running the handler.
	KillSwitchOpen
	// KillSwitchHalfOpen: one trial message is handled; the others wait
	// for its outcome.
	KillSwitchHalfOpen
)

func (s KillSwitchState) String() string {
	switch s {
	case KillSwitchClosed:
		return "closed"
	case KillSwitchOpen:
		return "open"
	case KillSwitchHalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("KillSwitchState(%d)", int(s))
}

// Pauser stops and resumes the consumption of what a KillSwitch guards (a
// warren.Subscriber's Pause and Resume of the route's topic; the router
// passes its route). Both are called on a goroutine of the KillSwitch's
// own, never on a handler's.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// KillSwitchConfig shapes a KillSwitch. Zero fields take MassTransit's
// defaults.
type KillSwitchConfig struct {
	// ActivationThreshold is how many handled attempts within
	// TrackingPeriod the switch needs before it may trip on the failure
	// rate. Default: 10.
	ActivationThreshold int
	// TripThreshold is the failure rate (0 to 1] that trips it. Default:
	// 0.15.
	TripThreshold float64
	// TrackingPeriod is the window outcomes are counted in. Default: 1m.
	TrackingPeriod time.Duration
	// RestartTimeout is how long it stays open before it tries one
	// message (half-open). Default: 1m.
	RestartTimeout time.Duration
	// Pauser pauses consumption while open. Without one, the messages that
	// arrive while open go back to the queue at once (at the Subscriber's
	// redelivery backoff).
	Pauser Pauser
	// OnStateChange is told of every change, on the KillSwitch's goroutine.
	OnStateChange func(from, to KillSwitchState, cause error)
	// Name labels logs and metrics (the router's route name).
	Name string
	// Logger logs each change: a trip at Warn, the rest at Info. Default:
	// silent.
	Logger *slog.Logger
	// Telemetry counts the changes (warren.kill_switch.transitions).
	// Default: telemetry.Default().
	Telemetry *telemetry.Telemetry
	// Now and After are the clock; tests replace them. Defaults: time.Now,
	// time.AfterFunc.
	Now   func() time.Time
	After func(time.Duration, func()) (stop func() bool)
}

func (c *KillSwitchConfig) setDefaults() {
	if c.ActivationThreshold == 0 {
		c.ActivationThreshold = 10
	}
	if c.TripThreshold == 0 {
		c.TripThreshold = 0.15
	}
	if c.TrackingPeriod == 0 {
		c.TrackingPeriod = time.Minute
	}
	if c.RestartTimeout == 0 {
		c.RestartTimeout = time.Minute
	}
	if c.Telemetry == nil {
		c.Telemetry = telemetry.Default()
	}
	c.Logger = logx.Or(c.Logger)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
}

// Validate reports every problem, each naming its field.
func (c *KillSwitchConfig) Validate() error {
	f := configerr.For("middleware.KillSwitchConfig")
	f.Check(c.ActivationThreshold < 1, "ActivationThreshold", "must be positive")
	f.Check(c.TripThreshold <= 0 || c.TripThreshold > 1, "TripThreshold", "must be in (0, 1]")
	f.Check(c.TrackingPeriod <= 0, "TrackingPeriod", "must be positive")
	f.Check(c.RestartTimeout <= 0, "RestartTimeout", "must be positive")
	return f.Err()
}

// KillSwitch stops consuming while what the handler depends on is down,
// instead of burning through retries and dead-lettering every message of
// an outage (MassTransit's kill switch, Wolverine's circuit breaker). It
// counts the outcome of each handler attempt (a retryable failure is a
// failure; a success a success; a permanent failure, a bad message, is
// neither) over TrackingPeriod; once ActivationThreshold attempts are in
// and TripThreshold of them failed, or a handler returned DependencyDown,
// it trips: the attempt that tripped it and every message that arrives
// while it is open go back to the queue (ack.AsRequeue with
// ErrKillSwitchOpen: neither retried nor dead-lettered) and the Pauser
// pauses consumption, so the broker holds the backlog. After RestartTimeout
// it resumes and lets one message through (half-open; the others wait for
// it): a success closes it, a failure trips it again.
//
// Put it inside Retry (the router does), so that it sees every attempt and
// what it gives back is not retried. It is safe for concurrent use.
type KillSwitch struct {
	cfg KillSwitchConfig

	mu       sync.Mutex
	state    KillSwitchState
	start    time.Time // of the tracking window
	attempts int
	failures int
	trial    bool          // half-open: the trial message is running
	trialEnd chan struct{} // closed when the trial ends
	stopT    func() bool
	closed   bool
}

// NewKillSwitch makes a KillSwitch; Middleware puts it in a stack.
func NewKillSwitch(cfg KillSwitchConfig) (*KillSwitch, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &KillSwitch{cfg: cfg, start: cfg.Now()}, nil
}

// State is where the switch is now.
func (k *KillSwitch) State() KillSwitchState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.state
}

// Close stops its timer: it trips and restarts no more.
func (k *KillSwitch) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.stopT != nil {
		k.stopT()
	}
}

// Middleware is the KillSwitch as a Watermill HandlerMiddleware.
func (k *KillSwitch) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		trial, err := k.admit(msg.Context())
		if err != nil {
			return nil, err
		}
		out, herr := h(msg)
		k.record(trial, herr)
		if herr != nil && k.State() != KillSwitchClosed && ack.KindOf(herr) == ack.Retryable {
			// It tripped (maybe on this very attempt): back to the queue,
			// not to the retries.
			return nil, ack.AsRequeue(fmt.Errorf("%w: %w", ErrKillSwitchOpen, herr))
		}
		return out, herr
	}
}

// admit decides whether a message runs: always when closed; never when
// open; when half-open, the first is the trial and the others wait for it.
func (k *KillSwitch) admit(ctx context.Context) (trial bool, err error) {
	for {
		k.mu.Lock()
		switch k.state {
		case KillSwitchClosed:
			k.mu.Unlock()
			return false, nil
		case KillSwitchOpen:
			k.mu.Unlock()
			return false, ack.AsRequeue(ErrKillSwitchOpen)
		}
		if !k.trial {
			k.trial = true
			k.trialEnd = make(chan struct{})
			k.mu.Unlock()
			return true, nil
		}
		wait := k.trialEnd
		k.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false, ack.AsRequeue(fmt.Errorf("%w: %w", ErrKillSwitchOpen, ctx.Err()))
		}
	}
}

// record counts an attempt's outcome and moves the state.
func (k *KillSwitch) record(trial bool, err error) {
	kind := ack.KindOf(err)
	failed := err != nil && kind == ack.Retryable
	down := errors.Is(err, ErrDependencyDown)
	k.mu.Lock()
	if trial {
		k.trial = false
		close(k.trialEnd)
		if failed || down {
			k.tripLocked(err)
			return
		}
		if err == nil {
			k.moveLocked(KillSwitchClosed, nil)
			k.start, k.attempts, k.failures = k.cfg.Now(), 0, 0
		}
		k.mu.Unlock()
		return
	}
	if k.state != KillSwitchClosed || (err != nil && !failed && !down) {
		k.mu.Unlock()
		return
	}
	if now := k.cfg.Now(); now.Sub(k.start) >= k.cfg.TrackingPeriod {
		k.start, k.attempts, k.failures = now, 0, 0
	}
	k.attempts++
	if failed || down {
		k.failures++
	}
	if down || (k.attempts >= k.cfg.ActivationThreshold && float64(k.failures) >= k.cfg.TripThreshold*float64(k.attempts)) {
		k.tripLocked(err)
		return
	}
	k.mu.Unlock()
}

// tripLocked opens the switch (k.mu held; released here): pause now, try
// again after RestartTimeout.
func (k *KillSwitch) tripLocked(cause error) {
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.moveLocked(KillSwitchOpen, cause)
	k.stopT = k.cfg.After(k.cfg.RestartTimeout, k.halfOpen)
	k.mu.Unlock()
	if p := k.cfg.Pauser; p != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), k.cfg.RestartTimeout)
			defer cancel()
			if err := p.Pause(ctx); err != nil {
				k.cfg.Logger.Warn("warren: the kill switch could not pause consumption", logx.Route, k.cfg.Name, logx.Error, err)
			}
		}()
	}
}

// halfOpen is the restart timer: resume, and let one message through.
func (k *KillSwitch) halfOpen() {
	k.mu.Lock()
	if k.closed || k.state != KillSwitchOpen {
		k.mu.Unlock()
		return
	}
	k.moveLocked(KillSwitchHalfOpen, nil)
	k.mu.Unlock()
	if p := k.cfg.Pauser; p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), k.cfg.RestartTimeout)
		defer cancel()
		if err := p.Resume(ctx); err != nil {
			k.cfg.Logger.Warn("warren: the kill switch could not resume consumption", logx.Route, k.cfg.Name, logx.Error, err)
		}
	}
}

// moveLocked records a change of state (k.mu held): log, count, tell.
func (k *KillSwitch) moveLocked(to KillSwitchState, cause error) {
	from := k.state
	if from == to {
		return
	}
	k.state = to
	attrs := []any{logx.Route, k.cfg.Name, "from", from.String(), "to", to.String()}
	if cause != nil {
		attrs = append(attrs, logx.Error, cause, logx.ErrorType, ack.ErrorType(cause))
	}
	switch to {
	case KillSwitchOpen:
		k.cfg.Logger.Warn("warren: kill switch tripped: consumption paused; messages stay in the queue",
			append(attrs, "attempts", k.attempts, "failures", k.failures, "restart_in", k.cfg.RestartTimeout)...)
	case KillSwitchHalfOpen:
		k.cfg.Logger.Info("warren: kill switch half-open: trying one message", attrs...)
	default:
		k.cfg.Logger.Info("warren: kill switch closed: consuming again", attrs...)
	}
	instrument.Of(k.cfg.Telemetry).KillSwitch(k.cfg.Name, to.String())
	if k.cfg.OnStateChange != nil {
		k.cfg.OnStateChange(from, to, cause)
	}
}
