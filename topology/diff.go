package topology

import (
	"fmt"
	"reflect"
)

// FirstDifference names the first field in which a and b (two specs of the
// same type, or two Topologies) differ, with both values shown, or "" when
// they declare the same thing. It walks nested structs, so the name is a
// path such as "Args.DeadLetterRoutingKey"; a nil and an empty argument
// table are the same.
func FirstDifference[T ExchangeSpec | QueueSpec | BindSpec | Topology](a, b T) (field, va, vb string) {
	return diffValue(reflect.ValueOf(a), reflect.ValueOf(b), "")
}

func diffValue(a, b reflect.Value, path string) (string, string, string) {
	if a.Kind() == reflect.Struct {
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name := f.Name
			if path != "" {
				name = path + "." + name
			}
			if d, va, vb := diffValue(a.Field(i), b.Field(i), name); d != "" {
				return d, va, vb
			}
		}
		return "", "", ""
	}
	if a.Kind() == reflect.Func {
		return "", "", "" // handlers are not part of what the broker sees
	}
	if emptyTable(a) && emptyTable(b) {
		return "", "", ""
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return path, show(a), show(b)
	}
	return "", "", ""
}

// emptyTable: a nil and an empty argument table declare the same thing.
func emptyTable(v reflect.Value) bool { return v.Kind() == reflect.Map && v.Len() == 0 }

func show(v reflect.Value) string {
	if v.Kind() == reflect.String {
		return fmt.Sprintf("%q", v.String())
	}
	return fmt.Sprintf("%v", v.Interface())
}
