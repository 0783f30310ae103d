// Package sweep calls exported functions and methods with nil and zero
// arguments and fails a test when one panics or blocks: the harness behind
// the bad-input sweeps of warren's packages (every bad input gets a typed
// error, nothing panics). It also lists a package's exported functions and
// methods from its source, so that a sweep fails when something new is
// exported and not swept.
package sweep

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Budget bounds one call: a call that takes longer is reported as blocked.
const Budget = 15 * time.Second

// ctxTimeout is the deadline of the ctx given to calls that take one: long
// enough for a broker round trip, short enough for a call that waits for
// its ctx to end.
const ctxTimeout = 500 * time.Millisecond

// Sweep records what was called.
type Sweep struct {
	t      *testing.T
	mu     sync.Mutex
	called map[string]bool
}

// New starts a sweep in t.
func New(t *testing.T) *Sweep { return &Sweep{t: t, called: map[string]bool{}} }

// Called reports the names swept so far ("Func", "Type.Method").
func (s *Sweep) Called() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.called))
	for k, v := range s.called {
		out[k] = v
	}
	return out
}

func (s *Sweep) mark(name string) {
	s.mu.Lock()
	s.called[name] = true
	s.mu.Unlock()
}

// Func calls fn (a function value) with zero arguments, and again with one
// zero element for a variadic parameter.
func (s *Sweep) Func(name string, fn any) {
	s.t.Helper()
	s.mark(name)
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func {
		s.t.Fatalf("sweep: %s is a %T, not a function", name, fn)
	}
	for _, args := range s.argSets(v.Type()) {
		s.call(name, v, args)
	}
}

// Methods calls every exported method of the value make returns, each on a
// fresh value (a call may close it), with zero arguments; done, when set,
// is given each value afterwards (to close it). typeName names the methods
// ("Type.Method").
func (s *Sweep) Methods(typeName string, make func() any, done func(any)) {
	s.t.Helper()
	probe := reflect.ValueOf(make())
	if done != nil {
		done(probe.Interface())
	}
	for i := range probe.NumMethod() {
		m := probe.Type().Method(i)
		name := typeName + "." + m.Name
		s.mark(name)
		for _, args := range s.argSets(m.Type) {
			recv := reflect.ValueOf(make())
			s.call(name, recv.Method(i), args[1:])
			if done != nil {
				done(recv.Interface())
			}
		}
	}
}

// argSets are the argument lists to try for a function type (with the
// receiver first for a method expression's type).
func (s *Sweep) argSets(ft reflect.Type) [][]reflect.Value {
	n := ft.NumIn()
	base := make([]reflect.Value, 0, n)
	for i := range n {
		in := ft.In(i)
		if ft.IsVariadic() && i == n-1 {
			break
		}
		base = append(base, s.zero(in))
	}
	sets := [][]reflect.Value{base}
	if ft.IsVariadic() {
		elem := ft.In(n - 1).Elem()
		sets = append(sets, append(slices.Clone(base), s.zero(elem)))
	}
	return sets
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	tbType  = reflect.TypeFor[testing.TB]()
	tType   = reflect.TypeFor[*testing.T]()
)

// zero is the argument of type t: a ctx with a short deadline, a testing.TB
// that records failures instead of failing the sweep, or the zero value.
func (s *Sweep) zero(t reflect.Type) reflect.Value {
	switch {
	case t == ctxType:
		ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
		s.t.Cleanup(cancel)
		return reflect.ValueOf(ctx)
	case t == tbType:
		return reflect.ValueOf(Quiet(s.t))
	case t == tType:
		return reflect.ValueOf(s.t)
	}
	return reflect.Zero(t)
}

// call runs fn(args...) on a goroutine of its own and reports a panic, or
// a call that does not return within Budget.
func (s *Sweep) call(name string, fn reflect.Value, args []reflect.Value) {
	s.t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Sprintf("%v (at %s)", p, panicSite())
				return
			}
			done <- nil
		}()
		fn.Call(args)
	}()
	select {
	case p := <-done:
		if p != nil {
			s.t.Errorf("%s(%s) panicked: %v", name, describe(args), p)
		}
	case <-time.After(Budget):
		s.t.Errorf("%s(%s) did not return within %v", name, describe(args), Budget)
	}
}

// panicSite is where the panic came from: the first frame outside the
// runtime, reflect and this package.
func panicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") && !strings.HasPrefix(f.Function, "reflect.") && !strings.Contains(f.Function, "internal/sweep") {
			return fmt.Sprintf("%s %s:%d", f.Function, filepath.Base(f.File), f.Line)
		}
		if !more {
			return "?"
		}
	}
}

func describe(args []reflect.Value) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if a.Kind() == reflect.Interface || !a.IsValid() {
			parts[i] = "nil"
			continue
		}
		parts[i] = a.Type().String()
	}
	return strings.Join(parts, ", ")
}

// Quiet returns a testing.TB on t whose failures are recorded, not
// reported (Fatal ends the calling goroutine, as it does in a test): a
// helper given zero arguments may well fail its caller's test (a wait for
// nothing), which is what its doc says, not a panic.
func Quiet(t testing.TB) testing.TB { return &quietTB{TB: t} }

// quietTB is Quiet's testing.TB.
type quietTB struct {
	testing.TB
	mu     sync.Mutex
	failed bool
}

func (q *quietTB) fail() {
	q.mu.Lock()
	q.failed = true
	q.mu.Unlock()
}
func (q *quietTB) Error(...any)          { q.fail() }
func (q *quietTB) Errorf(string, ...any) { q.fail() }
func (q *quietTB) Fail()                 { q.fail() }
func (q *quietTB) FailNow()              { q.fail(); runtime.Goexit() }
func (q *quietTB) Fatal(...any)          { q.FailNow() }
func (q *quietTB) Fatalf(string, ...any) { q.FailNow() }
func (q *quietTB) Skip(...any)           { runtime.Goexit() }
func (q *quietTB) Skipf(string, ...any)  { runtime.Goexit() }
func (q *quietTB) SkipNow()              { runtime.Goexit() }
func (q *quietTB) Failed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failed
}

// Exported lists the exported functions ("Func") and methods of exported
// types ("Type.Method") declared in the non-test Go files of dir.
func Exported(dir string) ([]string, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || !fn.Name.IsExported() {
				continue
			}
			if fn.Recv == nil {
				out = append(out, fn.Name.Name)
				continue
			}
			recv := fn.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			if idx, ok := recv.(*ast.IndexExpr); ok {
				recv = idx.X
			}
			if id, ok := recv.(*ast.Ident); ok && id.IsExported() {
				out = append(out, id.Name+"."+fn.Name.Name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Complete fails t for each exported function or method of dirs (by
// package name prefix: "warren.NewPublisher") that the sweep did not call,
// except those in skip, each of which must say why.
func (s *Sweep) Complete(dirs map[string]string, skip map[string]string) {
	s.t.Helper()
	called := s.Called()
	for pkg, dir := range dirs {
		names, err := Exported(dir)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, n := range names {
			full := pkg + "." + n
			if called[full] {
				continue
			}
			if why, ok := skip[full]; ok && why != "" {
				continue
			}
			s.t.Errorf("%s is exported but not swept with nil and zero arguments", full)
		}
	}
}
