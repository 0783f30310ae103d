// Package pgtest gives a test a PostgreSQL database of its own on the
// machine's server (127.0.0.1:5432, user postgres, trust; see
// scripts/postgres.sh), dropped when the test ends.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ServerEnv overrides the server's base DSN (without a database name).
const ServerEnv = "WARREN_PG_URL"

var seq atomic.Int64

// dsn is the DSN of database on the server. The machine's own server is
// reached without TLS, as the tests reach the broker (plain AMQP on
// 5672): pgx's default (sslmode=prefer) would take TLS whenever the
// server offers it, as Debian's does, and charge the outbox's and the
// inbox's benchmarks for encryption their broker side does not pay. A
// server given in ServerEnv is reached as its DSN says.
func dsn(database string) string {
	if s := os.Getenv(ServerEnv); s != "" {
		return s + "/" + database
	}
	return "postgres://postgres@127.0.0.1:5432/" + database + "?sslmode=disable"
}

// WithParams is dsn with the query parameters params ("a=1&b=2") added.
func WithParams(dsn, params string) string {
	if strings.Contains(dsn, "?") {
		return dsn + "&" + params
	}
	return dsn + "?" + params
}

// Database makes a database of the test's own and returns its DSN. Under
// -short the test is skipped: -short is the run without services.
func Database(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("pgtest: needs PostgreSQL; -short runs unit tests only")
	}
	name := fmt.Sprintf("warren_test_%d_%d_%s", os.Getpid(), seq.Add(1), sanitize(t.Name()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, dsn("postgres"))
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL: %v (scripts/postgres.sh makes sure of it)", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, dsn("postgres"))
		if err != nil {
			t.Errorf("pgtest: drop database: %v", err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return dsn(name)
}

// Pool opens a pool on dsn, closed when the test ends.
func Pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func sanitize(s string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	if sb.Len() > 30 {
		return sb.String()[:30]
	}
	return sb.String()
}
