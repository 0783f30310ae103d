package router

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/warrenmq/warren/conn"
)

// Who paused a route, as Health shows it.
const (
	// PausedByOperator is Pause's default.
	PausedByOperator = "operator"
	// PausedByKillSwitch is the route's kill switch, while tripped.
	PausedByKillSwitch = "kill switch"
)

// Pause stops the route named name from taking messages until Resume,
// without stopping it: its consumer is cancelled, the messages its handlers
// hold finish and settle (until ctx ends), the ones the broker had sent and
// no handler got go back to the queue in the order they came, and the
// broker holds the backlog (warren.Subscriber.Pause). by says who paused it
// ("" is PausedByOperator); the route consumes again once everyone who
// paused it resumed it, so an operator's pause outlives a kill switch's.
// Health shows the route paused, and by whom. ErrInvalidRoute for a name
// the router has no route of; conn.ErrClosed once closed.
func (r *Router) Pause(ctx context.Context, name, by string) error {
	rt, err := r.runningRoute(name)
	if err != nil {
		return err
	}
	return r.pauseRoute(ctx, rt, by)
}

// Resume takes back by's pause of the route named name ("" is
// PausedByOperator), and consumes again when nobody else paused it,
// returning once it does (or ctx ends: it goes on trying).
func (r *Router) Resume(ctx context.Context, name, by string) error {
	rt, err := r.runningRoute(name)
	if err != nil {
		return err
	}
	return r.resumeRoute(ctx, rt, by)
}

func (r *Router) runningRoute(name string) (*activeRoute, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, conn.ErrClosed
	}
	for _, rt := range r.routes {
		if rt.Name == name {
			if rt.sub == nil {
				return nil, fmt.Errorf("%w: route %q is not running (Run first)", ErrInvalidRoute, name)
			}
			return rt, nil
		}
	}
	return nil, fmt.Errorf("%w: no route named %q", ErrInvalidRoute, name)
}

func (r *Router) pauseRoute(ctx context.Context, rt *activeRoute, by string) error {
	if by == "" {
		by = PausedByOperator
	}
	rt.pauseMu.Lock()
	defer rt.pauseMu.Unlock()
	rt.byMu.Lock()
	first := len(rt.pausedBy) == 0
	if !slices.Contains(rt.pausedBy, by) {
		rt.pausedBy = append(rt.pausedBy, by)
	}
	rt.byMu.Unlock()
	if !first {
		return nil
	}
	r.cfg.Logger.Info("router: route paused: it takes no messages; those in hand finish, the rest stay in the queue", "route", rt.Name, "by", by)
	return rt.sub.Pause(ctx, rt.Queue.Name)
}

func (r *Router) resumeRoute(ctx context.Context, rt *activeRoute, by string) error {
	if by == "" {
		by = PausedByOperator
	}
	rt.pauseMu.Lock()
	defer rt.pauseMu.Unlock()
	rt.byMu.Lock()
	i := slices.Index(rt.pausedBy, by)
	if i < 0 {
		rt.byMu.Unlock()
		return nil
	}
	rt.pausedBy = slices.Delete(rt.pausedBy, i, i+1)
	still := strings.Join(rt.pausedBy, ", ")
	rt.byMu.Unlock()
	if still != "" {
		r.cfg.Logger.Info("router: route stays paused", "route", rt.Name, "resumed_by", by, "paused_by", still)
		return nil
	}
	r.cfg.Logger.Info("router: route resumed", "route", rt.Name, "by", by)
	return rt.sub.Resume(ctx, rt.Queue.Name)
}

// pausedByNow is who paused rt now ("" when nobody); it does not wait for
// a pause in progress.
func (rt *activeRoute) pausedByNow() string {
	rt.byMu.Lock()
	defer rt.byMu.Unlock()
	return strings.Join(rt.pausedBy, ", ")
}

// routePauser pauses and resumes a route for its kill switch.
type routePauser struct {
	r  *Router
	rt *activeRoute
	by string
}

func (p routePauser) Pause(ctx context.Context) error  { return p.r.pauseRoute(ctx, p.rt, p.by) }
func (p routePauser) Resume(ctx context.Context) error { return p.r.resumeRoute(ctx, p.rt, p.by) }
