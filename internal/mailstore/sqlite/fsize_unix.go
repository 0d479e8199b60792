//go:build unix

package sqlite

import (
	"math"
	"syscall"
)

// fileSizeLimit returns the soft RLIMIT_FSIZE of the process in octets
// (math.MaxUint64 when it cannot be read; RLIM_INFINITY is at least as
// large as any file).
func fileSizeLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &r); err != nil {
		return math.MaxUint64
	}
	return uint64(r.Cur)
}
