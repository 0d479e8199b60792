package message

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// oracleDir is the shared Dovecot corpus (see its README). The differential
// test against Dovecot's recorded FETCH output lives in internal/imap/render;
// this package uses the corpus as realistic parser input.
var oracleDir = filepath.Join("..", "..", "..", "shared", "testdata", "mime-oracle")

func oracleMessages(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat(oracleDir); errors.Is(err, os.ErrNotExist) {
		t.Skipf("oracle corpus %s not present", oracleDir)
	}
	files, err := filepath.Glob(filepath.Join(oracleDir, "messages", "*.eml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no oracle messages in %s: %v", oracleDir, err)
	}
	sort.Strings(files)
	return files
}

// normalizeCRLF applies the store's line-ending rule: a bare LF becomes
// CRLF, a bare CR stays.
func normalizeCRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// checkInvariants verifies the layout of a parsed tree.
func checkInvariants(t testing.TB, root *Part, size int64) {
	t.Helper()
	if err := root.Validate(size); err != nil {
		t.Fatal(err)
	}
}
