package lazyctx

import (
	"testing"

	"go.uber.org/goleak"
)

// AfterFunc and the deadline's timer run functions on goroutines of their
// own: none may outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
