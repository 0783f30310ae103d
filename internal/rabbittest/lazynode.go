package rabbittest

import (
	"sync"
	"testing"
)

// LazyNode is a disposable node shared by a package's tests: started by the
// first test that asks for it, destroyed by Main after the last test. A test
// that stops or kills it must start it again before it ends (Get checks).
type LazyNode struct {
	Options NodeOptions

	once sync.Once
	node *Node
	err  error
}

var lazyNodes struct {
	sync.Mutex
	list []*LazyNode
}

// Get returns the running node, starting it on first use.
func (l *LazyNode) Get(t testing.TB) *Node {
	t.Helper()
	if isShort() {
		t.Skip("rabbittest: a disposable node needs rabbitmq-server; -short runs unit tests only")
	}
	l.once.Do(func() {
		l.node, l.err = NewNode(l.Options)
		if l.err == nil {
			lazyNodes.Lock()
			lazyNodes.list = append(lazyNodes.list, l)
			lazyNodes.Unlock()
		}
	})
	if l.err != nil {
		t.Fatalf("rabbittest: start shared disposable node: %v", l.err)
	}
	if !l.node.Running() {
		if err := l.node.Start(); err != nil {
			t.Fatalf("rabbittest: restart shared disposable node: %v", err)
		}
	}
	return l.node
}

func destroyLazyNodes() {
	lazyNodes.Lock()
	defer lazyNodes.Unlock()
	for _, l := range lazyNodes.list {
		l.node.Destroy()
	}
	lazyNodes.list = nil
}

// Destroy kills the node if it was started (for a harness's TestMain that
// does not use Main).
func (l *LazyNode) Destroy() {
	lazyNodes.Lock()
	defer lazyNodes.Unlock()
	for i, x := range lazyNodes.list {
		if x == l {
			l.node.Destroy()
			lazyNodes.list = append(lazyNodes.list[:i], lazyNodes.list[i+1:]...)
			return
		}
	}
}
