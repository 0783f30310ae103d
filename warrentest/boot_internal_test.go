package warrentest

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestASlowBootLeavesTheVhostItsMinute: a node that takes longer than the
// admin's minute to boot (a loaded CI machine) still gets the test's vhost
// made. The vhost's minute used to start before the boot, and CI's
// set_permissions was killed when a boot under five compiling modules used
// it up. The boot is made slow in a synctest bubble, whose clock jumps.
func TestASlowBootLeavesTheVhostItsMinute(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a broker")
	}
	if _, err := sharedNode(t).Ctl(t.Context(), "list_vhosts"); err != nil { // booted outside the bubble
		t.Fatal(err)
	}
	real := sharedNode
	t.Cleanup(func() { sharedNode = real })
	sharedNode = func(t testing.TB) *rabbittest.Node {
		n := real(t)
		time.Sleep(2 * time.Minute) // the bubble's clock: no real wait
		return n
	}
	var vhost string
	synctest.Test(t, func(t *testing.T) {
		b := New(t)
		vhost = b.Vhost
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := b.Ctl(ctx, "list_vhosts")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, b.Vhost) {
			t.Fatalf("vhost %s not on the node: %s", b.Vhost, out)
		}
	})
	out, err := real(t).Ctl(t.Context(), "list_vhosts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, vhost) {
		t.Errorf("vhost %s outlived its test: %s", vhost, out)
	}
}
