package router

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/warrenmq/warren/conn"
)

// Health is what a readiness probe wants to know.
type Health struct {
	Connected bool `json:"connected"`
	// TopologyRestored is false when an entity failed to restore in the
	// latest restore run of the connection's registry: it covers every
	// route, the dead-letter queue and the delay levels, and what the output
	// publisher declared.
	TopologyRestored bool `json:"topology_restored"`
	// Routes maps each route to its state.
	Routes map[string]RouteHealth `json:"routes"`
	Error  string                 `json:"error,omitempty"`
}

// The states of a route in Health.
const (
	RouteRunning     = "running"     // consuming
	RoutePaused      = "paused"      // paused on purpose (Pause, its kill switch)
	RouteInterrupted = "interrupted" // not consuming, coming back by itself (a lost channel, a deleted queue, not started yet)
)

// RouteHealth is one route's state.
type RouteHealth struct {
	State string `json:"state"`
	// PausedBy says who paused a paused route (PausedByOperator,
	// PausedByKillSwitch, or what Pause was given), comma-separated.
	PausedBy string `json:"paused_by,omitempty"`
	// KillSwitch is the state of the route's kill switch ("closed",
	// "open", "half_open"), "" without one.
	KillSwitch string `json:"kill_switch,omitempty"`
}

// Ready reports whether every part is healthy. A paused route is: it was
// paused on purpose, and restarting the process would not help.
func (h Health) Ready() bool {
	if !h.Connected || !h.TopologyRestored {
		return false
	}
	for _, rh := range h.Routes {
		if rh.State == RouteInterrupted {
			return false
		}
	}
	return true
}

// Health reports the connection, the latest restore and every route.
func (r *Router) Health() Health {
	h := Health{Connected: r.conn.State() == conn.StateConnected, TopologyRestored: true, Routes: map[string]RouteHealth{}}
	var problems []string
	if rep, ok := r.reg.LastRestore(); ok && !rep.OK() {
		h.TopologyRestored = false
		for _, f := range rep.Failed {
			problems = append(problems, f.Error())
		}
		if rep.Err != nil {
			problems = append(problems, rep.Err.Error())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var down []string
	for _, rt := range r.routes {
		rh := RouteHealth{State: RouteRunning, PausedBy: rt.pausedByNow()}
		switch {
		case rh.PausedBy != "":
			rh.State = RoutePaused
		case rt.sub == nil || !rt.sub.Consuming():
			rh.State = RouteInterrupted
			down = append(down, rt.Name)
		}
		if rt.killSwitch != nil {
			rh.KillSwitch = rt.killSwitch.State().String()
		}
		h.Routes[rt.Name] = rh
	}
	if len(down) > 0 {
		problems = append(problems, "not consuming: "+strings.Join(down, ", "))
	}
	h.Error = strings.Join(problems, "; ")
	return h
}

// ReadinessHandler serves Health as JSON: 200 when ready, 503 otherwise.
func (r *Router) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := r.Health()
		w.Header().Set("Content-Type", "application/json")
		if !h.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
}

// LivenessHandler answers 200 while the router lives: before Run, while it
// starts (waiting for the broker is not a reason to restart the process)
// and while it runs; 503 once Run has returned or the connection closed for
// good, when only a restart helps. Readiness (ReadinessHandler) is the
// probe that follows the broker.
func (r *Router) LivenessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-r.runDone:
			http.Error(w, "router: Run has returned", http.StatusServiceUnavailable)
			return
		case <-r.conn.Done():
			http.Error(w, "router: the connection closed for good", http.StatusServiceUnavailable)
			return
		default:
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}
