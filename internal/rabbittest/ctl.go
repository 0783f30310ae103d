package rabbittest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// rabbitmqctl runs rabbitmqctl against node ("" is the machine's default
// node, the shared broker) with args.
//
// As root, Debian's /usr/sbin/rabbitmqctl switches to the rabbitmq user, whose
// Erlang cookie every node started by this package shares. As anybody else the
// nodes run as that user too, so the cookie in $HOME is the right one.
func rabbitmqctl(ctx context.Context, node string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	bin := "/usr/sbin/rabbitmqctl"
	if os.Geteuid() != 0 {
		bin = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	}
	full := []string{"-q"}
	if node != "" {
		full = append(full, "-n", node)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("rabbittest: rabbitmqctl %v: %w: %s", full, err, out.String())
	}
	return out.String(), nil
}

// Ctl runs rabbitmqctl against node ("" is the machine's default node).
func Ctl(ctx context.Context, node string, args ...string) (string, error) {
	return rabbitmqctl(ctx, node, args...)
}
