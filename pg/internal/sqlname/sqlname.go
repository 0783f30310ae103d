// Package sqlname is the one rule for the table names the pg packages put
// into their SQL: checked (no quoting needed, nothing injected), and the
// bare name their indexes are named after.
package sqlname

import "regexp"

var table = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}(\.[a-z_][a-z0-9_]{0,40})?$`)

// ValidTable reports whether name is a lower-case identifier, optionally
// schema-qualified, that needs no quoting.
func ValidTable(name string) bool { return table.MatchString(name) }

// Bare is a table's name without its schema, for index names.
func Bare(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			return name[i+1:]
		}
	}
	return name
}
