// Package examples holds one runnable program per folder. Each reads the
// broker URL from WARREN_URL (default amqp://guest:guest@127.0.0.1:5672/)
// and ends on its own; the test suite builds and runs every one of them.
package examples

import "os"

// URL is the broker the examples talk to.
func URL() string {
	if u := os.Getenv("WARREN_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}
