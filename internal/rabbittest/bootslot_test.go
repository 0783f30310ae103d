package rabbittest

import "testing"

// TestBootsTakeTurns: at most bootSlots boots hold a slot at once, across
// the lock files every test process shares, and a released slot is free
// again.
func TestBootsTakeTurns(t *testing.T) {
	old := bootSlotDir
	bootSlotDir = t.TempDir()
	t.Cleanup(func() { bootSlotDir = old })
	var held []func()
	for range bootSlots {
		release, ok := tryBootSlot()
		if !ok {
			t.Fatalf("slot %d of %d not free", len(held)+1, bootSlots)
		}
		held = append(held, release)
	}
	if _, ok := tryBootSlot(); ok {
		t.Fatalf("a boot got a slot while %d held them all", bootSlots)
	}
	held[0]()
	release, ok := tryBootSlot()
	if !ok {
		t.Fatal("a released slot stayed taken")
	}
	release()
	for _, r := range held[1:] {
		r()
	}
}
