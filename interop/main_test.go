package interop

import (
	"testing"

	"github.com/warrenmq/warren/internal/rabbittest"
)

func TestMain(m *testing.M) { rabbittest.Main(m) }
