// Package testpg gives tests a fresh PostgreSQL database of their own.
//
// It exists so that every test suite that runs against the postgres backend
// (the backend's own tests, the CLI integration tests parameterised by
// backend) creates and drops databases the same way. The server is named by
// the environment: LETTERBOX_TEST_POSTGRES_URL is a superuser URL of a
// throwaway cluster (scripts/testpg starts one; .ci/run does). Tests only.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable naming the test cluster.
const EnvURL = "LETTERBOX_TEST_POSTGRES_URL"

// AdminURL returns the test cluster's superuser URL, or "" when none is
// configured.
func AdminURL() string { return os.Getenv(EnvURL) }

// NewDatabase creates an empty database on the test cluster and returns its
// URL; the database is dropped when the test ends (after the test's other
// cleanups, so stores closed in t.Cleanup are closed first). It fails the
// test when no cluster is configured: callers decide whether to skip.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin := AdminURL()
	if admin == "" {
		t.Fatalf("testpg: %s is not set (start a cluster with scripts/testpg)", EnvURL)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "lbt_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testpg: connect %s: %v", admin, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testpg: create database: %v", err)
	}
	// Registered before the caller's cleanups, so it runs after them.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testpg: drop %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testpg: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testpg: %s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}
