package router

import (
	"encoding/json"
	"net/http"
)

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
