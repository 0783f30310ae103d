package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The parts of the machine that share its cores while the relay runs: this
// process (the client), the broker, the database, and everything else.
const (
	partClient   = "client"
	partBroker   = "broker"
	partDatabase = "database"
	partOther    = "other"
)

// partTicks is the CPU time each process has used so far, in clock ticks
// (USER_HZ), with the part it belongs to; read from /proc (empty where
// there is none).
type partTicks map[int]struct {
	part  string
	ticks float64
}

func readPartTicks() partTicks {
	out := partTicks{}
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue // gone since the listing
		}
		// The fields after the command's closing parenthesis: utime and
		// stime are the 12th and 13th (proc(5)).
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 13 {
			continue
		}
		user, _ := strconv.ParseFloat(fields[11], 64)
		system, _ := strconv.ParseFloat(fields[12], 64)
		cmdline, _ := os.ReadFile(dir + "/cmdline")
		out[pid] = struct {
			part  string
			ticks float64
		}{partOf(pid, self, string(cmdline)), user + system}
	}
	return out
}

// partOf names the part a process belongs to: PostgreSQL's processes (the
// postmaster and its backends, walwriter, autovacuum...) are the
// database; RabbitMQ's Erlang VM and its helpers the broker.
func partOf(pid, self int, cmdline string) string {
	switch {
	case pid == self:
		return partClient
	case strings.Contains(cmdline, "postgres"):
		return partDatabase
	case strings.Contains(cmdline, "rabbit") || strings.Contains(cmdline, "beam") || strings.Contains(cmdline, "epmd"):
		return partBroker
	}
	return partOther
}

// microsPerMessage is each part's CPU since t0, in microseconds per
// message over n messages (a process started since counts whole).
func (t partTicks) microsPerMessage(t0 partTicks, n int) map[string]float64 {
	out := map[string]float64{}
	for pid, now := range t {
		before := t0[pid]
		if before.part != now.part {
			before.ticks = 0 // a new process under a reused pid
		}
		out[now.part] += (now.ticks - before.ticks) * 1e6 / 100 / float64(n)
	}
	return out
}
