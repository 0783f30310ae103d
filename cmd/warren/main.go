// Command warren is the operators' side of warren: topology as code
// (validate, diff, apply, export), dead-letter triage and replay, and
// publish and tail for debugging.
//
//	go install github.com/warrenmq/warren/cmd/warren@latest
//
// The broker is --url or WARREN_URL (the library's URL options apply:
// heartbeat, connection_timeout, TLS files, several hosts). The commands
// that change a broker refuse to run without one; the others read the local
// broker then. Every output names the host and vhost; passwords are never
// printed (not in help, errors, tables or JSON).
//
// Exit codes:
//
//	0  done; nothing differs
//	1  failed (the broker refused, the connection was lost for good, ...)
//	2  wrong usage (unknown flag, missing argument)
//	3  the topology file is invalid
//	4  diff found differences
//	5  refused: apply would destroy messages without --force and
//	   --accept-message-loss, or purge was not confirmed
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes (see the package documentation).
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInvalidFile = 3
	exitDiffers     = 4
	exitRefused     = 5
)

// exitError carries an exit code other than exitFailed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command with its streams, for tests.
func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr *os.File) int {
	secrets := &scrubber{}
	secrets.add(os.Getenv("WARREN_URL"))
	secrets.add(urlFlag(args))
	root := newRoot(stdin, stdout, stderr, secrets)
	errOut := secrets.wrap(stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.code != exitDiffers {
			fmt.Fprintln(errOut, "warren:", redact(ee.err.Error()))
		}
		return ee.code
	}
	fmt.Fprintln(errOut, "warren:", redact(err.Error()))
	if isUsage(err) {
		return exitUsage
	}
	return exitFailed
}
