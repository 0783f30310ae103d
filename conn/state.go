package conn

import "fmt"

// State is where a connection is in its life. Closing and Closed are
// terminal: nothing leaves them but Closing -> Closed.
type State int32

const (
	// StateInitial: made by New, not opened yet.
	StateInitial State = iota
	// StateConnecting: Open's first connection attempts.
	StateConnecting
	// StateReconnecting: the connection was lost; attempts to get it back.
	StateReconnecting
	// StateConnected: connected and every restore hook has run.
	StateConnected
	// StateRefreshing: Refresh closed the connection on purpose and is
	// opening a new one.
	StateRefreshing
	// StateClosing: Close is shutting it down.
	StateClosing
	// StateClosed: closed for good, by Close or because it gave up (Err
	// says why).
	StateClosed
)

var stateNames = [...]string{"initial", "connecting", "reconnecting", "connected", "refreshing", "closing", "closed"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// Terminal reports whether s is Closing or Closed.
func (s State) Terminal() bool { return s == StateClosing || s == StateClosed }

// StateChange is one transition, delivered to state callbacks.
//
// From == To marks a failed attempt that did not change the state (for
// example the third reconnect attempt failing): Err is that attempt's error
// and Attempt its number.
type StateChange struct {
	From, To State
	// Err is the cause: why the connection was lost, why an attempt failed,
	// or why it closed. Nil for a plain Open, Refresh or Close.
	Err error
	// Attempt is the connection attempt this change belongs to, counted
	// from 1 within one connecting/reconnecting/refreshing phase; 0 when the
	// change is not about an attempt.
	Attempt int
}

func (c StateChange) String() string {
	s := fmt.Sprintf("%s -> %s", c.From, c.To)
	if c.Attempt > 0 {
		s += fmt.Sprintf(" (attempt %d)", c.Attempt)
	}
	if c.Err != nil {
		s += ": " + c.Err.Error()
	}
	return s
}
