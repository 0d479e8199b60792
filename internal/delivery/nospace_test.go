package delivery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// fullStore is a store whose spools fail to write with spoolErr, as the
// blob files do when the disk is full, and whose Deliver fails with
// deliverErr when that is set (the metadata commit failing).
type fullStore struct {
	mailstore.Store
	spoolErr   error
	deliverErr error
}

func (s *fullStore) NewSpool() (mailstore.Spool, error) {
	sp, err := s.Store.NewSpool()
	if err != nil || s.spoolErr == nil {
		return sp, err
	}
	return &failingSpool{Spool: sp, err: s.spoolErr}, nil
}

func (s *fullStore) Deliver(ctx context.Context, sp mailstore.Spool, date time.Time, rcpts []mailstore.Recipient) []error {
	if s.deliverErr == nil {
		return s.Store.Deliver(ctx, sp, date, rcpts)
	}
	sp.Abort()
	errs := make([]error, len(rcpts))
	for i := range errs {
		errs[i] = s.deliverErr
	}
	return errs
}

type failingSpool struct {
	mailstore.Spool
	err error
}

func (f *failingSpool) Write([]byte) (int, error) { return 0, f.err }

// TestDeliverInsufficientStorage: a spool write failing with ENOSPC,
// EDQUOT or EFBIG, or a store reporting ErrInsufficientStorage, fails the
// delivery with KindInsufficientStorage: 452 4.3.1, temporary, EX_TEMPFAIL,
// nothing stored and no spool file left. Other I/O errors stay KindTempFail
// (451 4.3.0).
func TestDeliverInsufficientStorage(t *testing.T) {
	spoolErr := func(errno syscall.Errno) error {
		return fmt.Errorf("blobfs: spool: %w", &fs.PathError{Op: "write", Path: "/data/blobs/tmp/spool-1", Err: errno})
	}
	tests := []struct {
		name       string
		spoolErr   error
		deliverErr error
		kind       Kind
		code       int
		enh        [3]int
		text       string
	}{
		{"ENOSPC", spoolErr(syscall.ENOSPC), nil, KindInsufficientStorage, 452, [3]int{4, 3, 1}, "Insufficient system storage, try again later"},
		{"EDQUOT", spoolErr(syscall.EDQUOT), nil, KindInsufficientStorage, 452, [3]int{4, 3, 1}, "Insufficient system storage, try again later"},
		{"EFBIG", spoolErr(syscall.EFBIG), nil, KindInsufficientStorage, 452, [3]int{4, 3, 1}, "Insufficient system storage, try again later"},
		{"database full", nil, fmt.Errorf("%w: sqlite: commit: database or disk is full (13)", mailstore.ErrInsufficientStorage),
			KindInsufficientStorage, 452, [3]int{4, 3, 1}, "Insufficient system storage, try again later"},
		{"EIO", spoolErr(syscall.EIO), nil, KindTempFail, 451, [3]int{4, 3, 0}, "Temporary failure storing the message, try again later"},
		{"I/O error on commit", nil, errors.New("sqlite: commit: disk I/O error (778)"),
			KindTempFail, 451, [3]int{4, 3, 0}, "Temporary failure storing the message, try again later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, store, _ := newTestAgent(t, "user@example.org")
			a.Store = &fullStore{Store: store, spoolErr: tt.spoolErr, deliverErr: tt.deliverErr}
			env := &Envelope{From: "sender@example.net", Recipients: resolveAll(t, a, "user@example.org", "user+x@example.org")}
			errs := a.Deliver(context.Background(), env, strings.NewReader("Subject: hi\r\n\r\nhello\r\n"))
			for i, err := range errs {
				var e *Error
				if !errors.As(err, &e) || e.Kind != tt.kind {
					t.Fatalf("recipient %d: %v, want kind %v", i, err, tt.kind)
				}
				code, enh, text := e.SMTPStatus()
				if code != tt.code || enh != tt.enh || text != tt.text {
					t.Errorf("recipient %d: %d %v %q, want %d %v %q", i, code, enh, text, tt.code, tt.enh, tt.text)
				}
				if !e.Temporary() || e.ExitCode() != ExitTempFail {
					t.Errorf("recipient %d: Temporary() = %v, ExitCode() = %d; want true, %d", i, e.Temporary(), e.ExitCode(), ExitTempFail)
				}
				if want := tt.spoolErr; want != nil && !errors.Is(err, want) {
					t.Errorf("recipient %d: %v does not wrap %v", i, err, want)
				}
			}
			if got := ExitCodeAll(errs); got != ExitTempFail {
				t.Errorf("ExitCodeAll = %d, want %d", got, ExitTempFail)
			}
			if msgs, _ := inbox(t, store, "user@example.org"); len(msgs) != 0 {
				t.Errorf("%d messages stored", len(msgs))
			}
			ents, err := os.ReadDir(filepath.Join(store.Dir(), "blobs", "tmp"))
			if err != nil || len(ents) != 0 {
				t.Errorf("blobs/tmp: %v, %v; want empty", ents, err)
			}
		})
	}
}
