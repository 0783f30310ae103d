package outbox

import (
	"fmt"

	"github.com/warrenmq/warren/pg/internal/sqlname"
)

// DefaultTable is the outbox table's default name.
const DefaultTable = "warren_outbox"

func schemaSQL(table string) string {
	index := sqlname.Bare(table)
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

// channel is the NOTIFY channel of a table.
func channel(table string) string { return "warren_outbox_" + sqlname.Bare(table) }
