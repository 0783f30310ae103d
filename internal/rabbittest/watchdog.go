package rabbittest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// watchdog kills a node's process group if the test binary dies without
// killing it (a panic, -timeout, SIGKILL): cleanups never run then, and the
// parent-death signal reaches only the node's shell, not beam. It is a small
// shell reading a pipe whose write end only this process holds. When this
// process ends, the kernel closes that end, read sees EOF, and the shell
// kills the group. disarm writes a line first, so a normal end kills
// nothing.
type watchdog struct {
	w   *os.File
	cmd *exec.Cmd
}

func startWatchdog(pgid int) (*watchdog, error) {
	r, w, err := os.Pipe() // close-on-exec: no other child inherits w
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("if read -r _; then exit 0; fi; kill -s KILL -- -%d 2>/dev/null", pgid))
	cmd.Stdin = r
	// Its own group: a signal for the test binary's group spares it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return &watchdog{w: w, cmd: cmd}, nil
}

// disarm ends the watchdog without killing anything; the node is already
// gone or being killed by its owner.
func (d *watchdog) disarm() {
	_, _ = d.w.WriteString("disarm\n")
	_ = d.w.Close()
	_ = d.cmd.Wait()
}
