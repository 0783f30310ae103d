package conn_test

import (
	"testing"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// node is a disposable broker for the tests that kill, restart or alarm it.
var node = &rabbittest.LazyNode{}

func TestMain(m *testing.M) { rabbittest.Main(m) }
