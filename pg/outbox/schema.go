package outbox

import (
	"fmt"
	"regexp"
)

// DefaultTable is the outbox table's default name.
const DefaultTable = "warren_outbox"

// validTable: a table name, optionally schema-qualified, that needs no
// quoting (it also names the NOTIFY channel).
var validTable = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}(\.[a-z_][a-z0-9_]{0,40})?$`)

func schemaSQL(table string) string {
	index := indexName(table)
	return fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id           bigserial   PRIMARY KEY,
	topic        text        NOT NULL,
	order_key    text        NOT NULL,
	uuid         text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL DEFAULT '{}',
	created_at   timestamptz NOT NULL DEFAULT now(),
	published_at timestamptz,
	failed_at    timestamptz,
	error        text
);
CREATE INDEX IF NOT EXISTS %[2]s_pending ON %[1]s (id) WHERE published_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS %[2]s_published ON %[1]s (published_at) WHERE published_at IS NOT NULL;
`, table, index)
}

// indexName is table without its schema, for index names.
func indexName(table string) string {
	for i := len(table) - 1; i >= 0; i-- {
		if table[i] == '.' {
			return table[i+1:]
		}
	}
	return table
}

// channel is the NOTIFY channel of a table.
func channel(table string) string { return "warren_outbox_" + indexName(table) }
