//go:build !unix

package sqlite

import "math"

// fileSizeLimit: no RLIMIT_FSIZE here.
func fileSizeLimit() uint64 { return math.MaxUint64 }
