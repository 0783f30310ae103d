package rabbittest

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Booting a node is a few seconds of Erlang's CPU. make test runs its
// suites side by side, and with a dozen nodes booting at once on 2 cores
// one took more than its 90 s (PITFALLS 50). Boots take turns instead,
// machine-wide: a boot holds one of bootSlots file locks, shared by every
// test process, from the node's start until it accepts connections, and
// its BootTimeout starts once it holds one.
const bootSlots = 2

// bootSlotDir is where the slots' lock files are (a test seam).
var bootSlotDir = os.TempDir()

// bootSlotWait bounds the wait for a slot: the longest queue of boots
// make test makes, with room.
const bootSlotWait = 10 * time.Minute

// bootSlot waits for a boot slot and returns its release. When the lock
// files cannot be opened, boots go ahead without taking turns.
func bootSlot() (release func(), err error) {
	deadline := time.Now().Add(bootSlotWait)
	for {
		release, ok := tryBootSlot()
		if ok {
			return release, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rabbittest: no boot slot free in %s for %v (other boots held all %d)", bootSlotDir, bootSlotWait, bootSlots)
		}
		time.Sleep(50 * time.Millisecond) // other processes' boots: no event to wait on
	}
}

// tryBootSlot takes a free boot slot, if there is one.
func tryBootSlot() (release func(), ok bool) {
	opened := 0
	for i := range bootSlots {
		name := filepath.Join(bootSlotDir, fmt.Sprintf("warren-rabbittest-boot-%d.lock", i))
		f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, 0o666)
		if err != nil {
			continue
		}
		opened++
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return func() { f.Close() }, true // closing the file drops the lock
		}
		f.Close()
	}
	if opened == 0 {
		return func() {}, true
	}
	return nil, false
}
