package sqlite

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// benchBody is a typical ~4 KiB message; each delivery gets a distinct
// first line so that no two bodies deduplicate.
var benchBody = "From: a@example.org\r\nTo: b@example.org\r\nSubject: benchmark\r\n\r\n" +
	strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do.\r\n", 62)

// BenchmarkDeliver measures durable single-recipient deliveries with 1, 8
// and 32 concurrent senders (group commit shares the fsyncs among them).
func BenchmarkDeliver(b *testing.B) {
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			st, err := Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			a, err := st.CreateAccount(bg, "bench@example.org", "x")
			if err != nil {
				b.Fatal(err)
			}
			r := []mailstore.Recipient{{AccountID: a.ID, Mailbox: mailstore.Inbox}}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(int64(len(benchBody)))
			b.ResetTimer()
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						sp, err := st.NewSpool()
						if err != nil {
							b.Error(err)
							return
						}
						fmt.Fprintf(sp, "X-Seq: %d\r\n", i)
						sp.Write([]byte(benchBody))
						if err := st.Deliver(bg, sp, testDate, r)[0]; err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
