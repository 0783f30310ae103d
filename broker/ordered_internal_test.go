package broker

import (
	"slices"
	"strconv"
	"testing"
)

// TestOrderedKeepsInsertionOrder: values come in the order keys were first
// set, across replacements, deletions, re-insertions (at the end), the
// empty key (the tombstones' value) and the compactions that deleting most
// keys triggers.
func TestOrderedKeepsInsertionOrder(t *testing.T) {
	var o ordered[int]
	var want []string // the model: keys in order
	set := func(k string, v int) {
		if !slices.Contains(want, k) {
			want = append(want, k)
		}
		o.set(k, v)
	}
	del := func(k string) {
		want = slices.DeleteFunc(want, func(s string) bool { return s == k })
		o.delete(k)
	}
	check := func(step string) {
		t.Helper()
		var wantValues []int
		for _, k := range want {
			v, ok := o.get(k)
			if !ok {
				t.Fatalf("%s: %q missing", step, k)
			}
			wantValues = append(wantValues, v)
		}
		if got := o.values(); !slices.Equal(got, wantValues) || o.len() != len(want) {
			t.Fatalf("%s: values %v (len %d), want %v", step, got, o.len(), wantValues)
		}
	}
	set("", -1) // the empty key is a key like any other
	for i := range 200 {
		set(strconv.Itoa(i), i)
	}
	set("5", 500) // replaced in place
	check("after inserts")
	for i := 0; i < 200; i += 3 {
		del(strconv.Itoa(i))
	}
	del("does-not-exist")
	check("after deleting a third")
	for i := 1; i < 200; i += 3 {
		del(strconv.Itoa(i))
	}
	check("after deleting two thirds (compacted)")
	set("0", 1000) // back, at the end
	del("")
	set("", 7)
	check("after re-inserting")
	if _, ok := o.get("1"); ok {
		t.Fatal("a deleted key is still there")
	}
}
