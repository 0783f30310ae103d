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
	// Routes maps each route to whether it is consuming (false while its
	// consumer comes back from an interruption).
	Routes map[string]bool `json:"routes"`
	Error  string          `json:"error,omitempty"`
}

// Ready reports whether every part is healthy.
func (h Health) Ready() bool {
	if !h.Connected || !h.TopologyRestored {
		return false
	}
	for _, ok := range h.Routes {
		if !ok {
			return false
		}
	}
	return true
}

// Health reports the connection, the latest restore and every route.
func (r *Router) Health() Health {
	h := Health{Connected: r.conn.State() == conn.StateConnected, TopologyRestored: true, Routes: map[string]bool{}}
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
		ok := rt.sub != nil && rt.sub.Consuming()
		h.Routes[rt.Name] = ok
		if !ok {
			down = append(down, rt.Name)
		}
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
