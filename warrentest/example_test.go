package warrentest_test

import (
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/topology"
	"github.com/warrenmq/warren/warrentest"
)

// ordersRoute and payload are what the package doc's example leaves to the
// reader: a route with the router's defaults on the queue "orders".
func ordersRoute() router.Route {
	return router.Route{
		Name:    "orders",
		Queue:   topology.QueueSpec{Name: "orders", Durable: true},
		Handler: func(*message.Message) error { return nil },
	}
}

var payload = []byte(`{"order":1}`)

func TestOrdersAreShipped(t *testing.T) {
	t.Parallel()
	b := warrentest.New(t) // a vhost of its own, deleted at the end
	rec := warrentest.NewRecorder()
	r := b.Router(router.Config{})
	if err := r.AddRoute(rec.Route(ordersRoute())); err != nil {
		t.Fatal(err)
	}
	warrentest.Start(t, r)
	// Another connection, the default mapping: the route's queue as it is.
	pub := b.Publisher(warren.PublisherConfig{})
	if err := pub.Publish("orders", message.NewMessage("order-1", payload)); err != nil {
		t.Fatal(err)
	}
	rec.WaitConsumed(t, "order-1", 10*time.Second)
}

// The package doc shows TestOrdersAreShipped as it is written here: a doc
// example that drifts from code that runs is how the last one came to fail
// unseen (its Publish error was ignored).
func TestPackageDocExampleIsTestOrdersAreShipped(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var shown []string
	inside := false
	for line := range strings.SplitSeq(string(doc), "\n") {
		code, isCode := strings.CutPrefix(line, "//\t")
		switch {
		case isCode && strings.HasPrefix(code, "func TestOrdersAreShipped"):
			inside = true
		case !isCode:
			inside = false
		}
		if inside {
			shown = append(shown, strings.Join(strings.Fields(code), " "))
		}
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "TestOrdersAreShipped" {
			var sb strings.Builder
			if err := printer.Fprint(&sb, fset, &printer.CommentedNode{Node: fn, Comments: f.Comments}); err != nil {
				t.Fatal(err)
			}
			for line := range strings.SplitSeq(sb.String(), "\n") {
				written = append(written, strings.Join(strings.Fields(line), " "))
			}
		}
	}
	if len(shown) == 0 || strings.Join(shown, "\n") != strings.Join(written, "\n") {
		t.Fatalf("the package doc's example is not TestOrdersAreShipped as written:\n--- doc.go\n%s\n--- example_test.go\n%s",
			strings.Join(shown, "\n"), strings.Join(written, "\n"))
	}
}
