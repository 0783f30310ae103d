package conn

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"
)

// recordingConn keeps what is written to it, or only counts the writes.
type recordingConn struct {
	net.Conn  // nil: only Write is used
	countOnly bool
	got       bytes.Buffer
	writes    int
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.writes++
	if r.countOnly {
		return len(p), nil
	}
	return r.got.Write(p)
}

// frame encodes one AMQP frame.
func frame(typ byte, channel uint16, payload []byte) []byte {
	f := []byte{typ, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(f[1:3], channel)
	binary.BigEndian.PutUint32(f[3:7], uint32(len(payload)))
	return append(append(f, payload...), 0xCE)
}

// method encodes a method frame with args after its class and method ids.
func method(channel, class, id uint16, args ...byte) []byte {
	p := binary.BigEndian.AppendUint16(nil, class)
	p = binary.BigEndian.AppendUint16(p, id)
	return frame(frameMethod, channel, append(p, args...))
}

var protocolHeader = []byte("AMQP\x00\x00\x09\x01")

// guardScript is a session as amqp091-go could write it: which frames go
// out, and which the broker must never see.
func guardScript() (all, want []byte) {
	var b, w bytes.Buffer
	send := func(f []byte, arrives bool) {
		b.Write(f)
		if arrives {
			w.Write(f)
		}
	}
	declare := func(ch uint16) []byte { return method(ch, 50, 10, []byte("\x00\x00\x05queue\x1a\x00\x00\x00\x00")...) }
	publish := func(ch uint16, arrives bool) {
		send(method(ch, 60, 40, 0, 0, 0, 0), arrives)
		send(frame(2, ch, make([]byte, 14)), arrives)
		send(frame(3, ch, bytes.Repeat([]byte("b"), 300)), arrives)
	}
	send(protocolHeader, true)
	send(method(0, 10, 11, []byte("start-ok")...), true)
	send(method(1, classChannel, methodChannelOpen, 0), true)
	send(declare(1), true)
	publish(1, true)
	// The broker closed channel 1; amqp091-go answered.
	send(method(1, classChannel, methodCloseOk), true)
	send(declare(1), false) // a NoWait declare that passed its check before
	publish(1, false)
	send(method(1, classChannel, methodChannelClose, 0, 200), false)
	send(method(1, classChannel, methodCloseOk), false)
	send(frame(8, 0, nil), true) // a heartbeat
	send(method(2, classChannel, methodChannelOpen, 0), true)
	send(declare(2), true)
	// The client closes channel 2 while another goroutine still sends on
	// it; the broker's close crosses the client's.
	send(method(2, classChannel, methodChannelClose, 0, 200), true)
	send(declare(2), false)
	send(method(2, classChannel, methodCloseOk), true)
	send(declare(2), false)
	send(method(2, classChannel, methodChannelClose, 0, 200), false)
	// Channel 1's number is lent again: it is open once more.
	send(method(1, classChannel, methodChannelOpen, 0), true)
	send(declare(1), true)
	publish(1, true)
	send(declare(3), true) // a channel the guard never saw open is not its business
	return b.Bytes(), w.Bytes()
}

// TestFrameGuardDropsFramesOfShutChannels: whatever the writes' boundaries
// (a frame head split anywhere, many frames in one write), the broker
// receives every frame but those of a channel after the client closed it
// or answered its close, until the channel is opened again.
func TestFrameGuardDropsFramesOfShutChannels(t *testing.T) {
	all, want := guardScript()
	run := func(t *testing.T, cuts []int) {
		t.Helper()
		r := &recordingConn{}
		g := newFrameGuard(r)
		prev := 0
		for _, c := range append(cuts, len(all)) {
			n, err := g.Write(all[prev:c])
			if err != nil || n != c-prev {
				t.Fatalf("Write(%d bytes) = %d, %v", c-prev, n, err)
			}
			prev = c
		}
		if !bytes.Equal(r.got.Bytes(), want) {
			t.Fatalf("cuts %v: the broker would receive %d bytes, want %d:\n%x\nwant\n%x", cuts, r.got.Len(), len(want), r.got.Bytes(), want)
		}
	}
	run(t, nil)
	for c := 1; c < len(all); c++ {
		run(t, []int{c})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var cuts []int
		for c := rng.IntN(12) + 1; c < len(all); c += rng.IntN(24) + 1 {
			cuts = append(cuts, c)
		}
		run(t, cuts)
	}
	if len(want) >= len(all) {
		t.Fatal("the script drops nothing: the test would prove nothing")
	}
}

// TestFrameGuardPassesWritesThrough: a write with nothing to drop goes on
// as it is, in one write and with no allocation.
func TestFrameGuardPassesWritesThrough(t *testing.T) {
	r := &recordingConn{countOnly: true}
	g := newFrameGuard(r)
	if _, err := g.Write(protocolHeader); err != nil {
		t.Fatal(err)
	}
	var group []byte
	group = append(group, method(1, 60, 40, 0, 0, 0, 0)...)
	group = append(group, frame(2, 1, make([]byte, 14))...)
	group = append(group, frame(3, 1, make([]byte, 256))...)
	r.writes = 0
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := g.Write(group); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations a write", allocs)
	}
	if r.writes != 101 {
		t.Errorf("%d socket writes for 101 writes", r.writes)
	}
}

// BenchmarkFrameGuardWrite is the guard's cost on a publish of 256 bytes
// (its method, header and body frames in one write, as amqp091-go flushes
// them), against the same write straight to the socket.
func BenchmarkFrameGuardWrite(b *testing.B) {
	var group []byte
	group = append(group, method(1, 60, 40, 0, 0, 0, 0)...)
	group = append(group, frame(2, 1, make([]byte, 14))...)
	group = append(group, frame(3, 1, make([]byte, 256))...)
	b.Run("direct", func(b *testing.B) {
		r := &recordingConn{countOnly: true}
		b.ReportAllocs()
		for b.Loop() {
			_, _ = r.Write(group)
		}
	})
	b.Run("guarded", func(b *testing.B) {
		g := newFrameGuard(&recordingConn{countOnly: true})
		_, _ = g.Write(protocolHeader)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = g.Write(group)
		}
	})
}
