package conn

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
)

// frameGuard keeps from the broker what amqp091-go writes on a channel it
// has already closed, which the broker punishes by closing the whole
// connection (PITFALLS 69).
//
// amqp091-go checks that a channel is open and then sends, with no lock
// between the two that its answer to a close also takes, for every method
// but a publish and an ack. When the broker closes a channel (a 405 or
// 404 refusing one declaration of a pipelined batch), amqp091-go's reader
// answers with channel.close-ok, and a goroutine that passed its check
// just before still writes its frame after that answer. To the broker it
// is a frame on a channel that no longer exists: 504 CHANNEL_ERROR
// "expected 'channel.open'", and every channel and consumer of the
// connection goes with it. Warren's pipelined declarations send hundreds
// of NoWait methods on channels the broker may close at any step: with
// four channels refused at their first step, raw amqp091-go lost its
// connection in one round of eight, and warren without this guard within
// 33 rounds of 100 in each of six runs (frameguard_test.go; MEASUREMENTS,
// "A thirtieth pass").
//
// The guard sits where amqp091-go writes its frames (above TLS), reads the
// frame heads going by and drops, per the protocol's own rule, every frame
// of a channel after the client's channel.close, except the close-ok that
// answers a broker's close crossing it, and every frame after the client's
// channel.close-ok, until that channel number is opened again. A frame
// dropped here is one the broker would have discarded or died of: a
// NoWait method expects no answer, and amqp091-go returns ErrClosed to a
// waiting call once the channel shuts down.
type frameGuard struct {
	net.Conn

	mu sync.Mutex
	// preamble counts the bytes of the protocol header ("AMQP" 0 0 9 1),
	// the first thing written, still to let through unread.
	preamble int
	// head holds a frame head split across writes, headLen bytes of it.
	head    [methodHeadLen]byte
	headLen int
	// rest counts the bytes of the current frame after its head; drop
	// says whether they go.
	rest int
	drop bool
	// shut holds the channels the client has closed (closing: it sent
	// channel.close; closed: it sent channel.close-ok).
	shut map[uint16]channelShut
	// out is reused for the writes that must leave something out.
	out []byte
}

type channelShut uint8

const (
	closing channelShut = iota + 1
	closed
)

const (
	protocolHeaderLen = 8
	// frameHeadLen is a frame's type, channel and size; methodHeadLen adds
	// a method frame's class and method ids.
	frameHeadLen  = 7
	methodHeadLen = frameHeadLen + 4
	frameEndLen   = 1

	frameMethod = 1

	classChannel       = 20
	methodChannelOpen  = 10
	methodChannelClose = 40
	methodCloseOk      = 41
)

func newFrameGuard(c net.Conn) *frameGuard {
	return &frameGuard{Conn: c, preamble: protocolHeaderLen, shut: map[uint16]channelShut{}}
}

// Write passes p on without the frames of shut channels. It reports all of
// p written: what it dropped was meant never to arrive.
func (g *frameGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.filter(p)
	if len(out) > 0 {
		if _, err := g.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// ConnectionState is the TLS connection's, for amqp091-go's
// Connection.ConnectionState.
func (g *frameGuard) ConnectionState() tls.ConnectionState {
	if tc, ok := g.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// filter returns what of p goes to the socket: p itself when that is all
// of it (the usual case, no copy), else a copy without the dropped frames
// and with a head held back from the previous write in front.
func (g *frameGuard) filter(p []byte) []byte {
	s := keeper{p: p, buf: g.out[:0]}
	for i := 0; i < len(p); {
		switch {
		case g.preamble > 0:
			n := min(g.preamble, len(p)-i)
			s.keep(i, i+n)
			g.preamble -= n
			i += n
		case g.rest > 0:
			n := min(g.rest, len(p)-i)
			if !g.drop {
				s.keep(i, i+n)
			}
			g.rest -= n
			i += n
		case g.headLen == 0 && len(p)-i >= headLen(p[i]):
			// The whole head is in p: decide without copying it.
			n := headLen(p[i])
			g.start(p[i : i+n])
			if !g.drop {
				s.keep(i, i+n)
			}
			i += n
		default:
			// A head split across writes: gather it, then decide.
			for i < len(p) && !g.headComplete() {
				g.head[g.headLen] = p[i]
				g.headLen++
				i++
			}
			if !g.headComplete() {
				break // the rest of the head comes with the next write
			}
			head := g.head[:g.headLen]
			g.headLen = 0
			g.start(head)
			if !g.drop {
				s.add(head)
			}
		}
	}
	if s.copied && cap(s.buf) <= maxKeptBuffer {
		g.out = s.buf[:0]
	}
	return s.bytes()
}

// headComplete reports whether the head being gathered across writes is
// all there.
func (g *frameGuard) headComplete() bool {
	return g.headLen >= frameHeadLen && g.headLen >= headLen(g.head[0])
}

// headLen is how much of a frame's head the guard reads before deciding:
// a method frame's class and method too.
func headLen(frameType byte) int {
	if frameType == frameMethod {
		return methodHeadLen
	}
	return frameHeadLen
}

// start reads a frame's head: whether the frame goes, and how many bytes
// follow the head.
func (g *frameGuard) start(head []byte) {
	size := binary.BigEndian.Uint32(head[3:7])
	g.rest = frameHeadLen + int(size) + frameEndLen - len(head)
	g.drop = g.dropFrame(head)
}

// dropFrame applies the channel rules to one frame head and says whether
// the frame is dropped.
func (g *frameGuard) dropFrame(head []byte) bool {
	channel := binary.BigEndian.Uint16(head[1:3])
	if channel == 0 {
		return false // the connection's own frames, heartbeats
	}
	var state channelShut
	if len(g.shut) > 0 {
		state = g.shut[channel]
	}
	if head[0] == frameMethod && binary.BigEndian.Uint16(head[7:9]) == classChannel {
		switch binary.BigEndian.Uint16(head[9:11]) {
		case methodChannelOpen:
			delete(g.shut, channel)
			return false
		case methodChannelClose:
			if state != 0 {
				return true
			}
			g.shut[channel] = closing
			return false
		case methodCloseOk:
			if state == closed {
				return true
			}
			g.shut[channel] = closed
			return false
		}
	}
	return state != 0
}

// keeper builds the bytes of p that go: a prefix of p while everything
// kept is contiguous from its start, a copy once something is left out.
type keeper struct {
	p      []byte
	n      int // while !copied, p[:n] is what goes
	buf    []byte
	copied bool
}

func (k *keeper) keep(i, j int) {
	if !k.copied && i == k.n {
		k.n = j
		return
	}
	k.add(k.p[i:j])
}

// add appends b, which need not be part of p.
func (k *keeper) add(b []byte) {
	if !k.copied {
		k.buf = append(k.buf, k.p[:k.n]...)
		k.copied = true
	}
	k.buf = append(k.buf, b...)
}

func (k *keeper) bytes() []byte {
	if k.copied {
		return k.buf
	}
	return k.p[:k.n]
}
