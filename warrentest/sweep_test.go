package warrentest_test

import (
	"testing"

	"github.com/warrenmq/warren/internal/sweep"
	"github.com/warrenmq/warren/warrentest"
)

// TestEveryExportedCallTakesNilAndZeroArguments: every exported function
// and method of the harness, called with nil and zero arguments, fails the
// test it was given or does what its doc says; none panics or blocks.
// (A fault of a node the test does not own, Restart without Own, fails the
// test: the harness's t is a quiet one here.)
func TestEveryExportedCallTakesNilAndZeroArguments(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the broker; -short runs unit tests only")
	}
	s := sweep.New(t)
	b := warrentest.New(sweep.Quiet(t))
	rec := warrentest.NewRecorder()
	s.Func("warrentest.New", warrentest.New)
	s.Func("warrentest.NewRecorder", warrentest.NewRecorder)
	s.Func("warrentest.Own", warrentest.Own)
	s.Func("warrentest.Start", warrentest.Start)
	s.Func("warrentest.VerifyNoLeaks", func(tb testing.TB) {}) // a leak check of the whole process: TestMain runs it
	s.Methods("warrentest.Broker", func() any { return b }, nil)
	s.Methods("warrentest.Recorder", func() any { return rec }, nil)
	s.Methods("warrentest.Tap", func() any { return b.Tap("amq.topic", "#") }, nil)
	s.Methods("warrentest.Event", func() any { return warrentest.Event{} }, nil)
	s.Methods("warrentest.EventKind", func() any { return warrentest.EventKind(0) }, nil)
	s.Complete(map[string]string{"warrentest": "."}, map[string]string{
		"warrentest.Main": "runs a whole test binary (m.Run, os.Exit): TestMain calls it",
	})
}
