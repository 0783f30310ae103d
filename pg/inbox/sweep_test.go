package inbox_test

import (
	"testing"

	"github.com/warrenmq/warren/internal/sweep"
	"github.com/warrenmq/warren/pg/inbox"
)

// TestEveryExportedCallTakesNilAndZeroArguments: every exported function
// and method of the package, called with nil and zero arguments, returns an
// error or does what its doc says; none panics or blocks.
func TestEveryExportedCallTakesNilAndZeroArguments(t *testing.T) {
	_, ib := setup(t)
	s := sweep.New(t)
	s.Func("inbox.New", inbox.New)
	s.Func("inbox.Tx", inbox.Tx)
	s.Methods("inbox.Inbox", func() any { return ib }, nil)
	s.Complete(map[string]string{"inbox": "."}, nil)
}
