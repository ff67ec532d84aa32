package storage

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTruncatedWhileStopped cuts the active segment while the log is closed (emptied, and cut
// at a batch boundary), below the forwarder's required cursor. Recovery must report it as
// damage with an error line and a gap, and never hand the lost offsets out again.
func TestTruncatedWhileStopped(t *testing.T) {
	for _, keep := range []string{"empty", "first-batch"} {
		t.Run(keep, func(t *testing.T) {
			dir := t.TempDir()
			l, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := l.CreateStream("readings", StreamConfig{Partitions: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.RequireCursor("forwarder"); err != nil {
				t.Fatal(err)
			}
			var firstBatch int64
			for i := 0; i < 100; i++ {
				if _, err := st.Partition(0).Append(t.Context(), Record{Key: []byte("d"), Value: []byte(fmt.Sprint(i)), Timestamp: time.Now()}); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					fi, _ := os.Stat(filepath.Join(l.partitionDir("readings", 0), segmentName(0, plainExt)))
					firstBatch = fi.Size()
				}
			}
			if err := l.SetCursor("forwarder", "readings", 0, 90); err != nil {
				t.Fatal(err)
			}
			l.Close()
			size, want := int64(0), int64(0)
			if keep == "first-batch" {
				size, want = firstBatch, 1
			}
			if err := os.Truncate(filepath.Join(dir, "streams", "readings", "0", segmentName(0, plainExt)), size); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			l, err = Open(dir, &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			st, _ = l.Stream("readings")
			p := st.Partition(0)
			if d := l.Damage(); len(d) != 1 || d[0].Offset != want {
				t.Fatalf("damage %v, want one report at offset %d", d, want)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "truncated while stopped") {
				t.Fatalf("no error line about the truncation:\n%s", logs.String())
			}
			gaps := p.Gaps()
			if len(gaps) != 1 || gaps[0].From != want || gaps[0].To != 90 || gaps[0].Reason != GapTruncated {
				t.Fatalf("gaps %+v, want [%d, 90) %s", gaps, want, GapTruncated)
			}
			off, err := p.Append(t.Context(), Record{Key: []byte("d"), Value: []byte("after")})
			if err != nil || off != 90 {
				t.Fatalf("append after recovery: offset %d %v, want 90 (offsets below the cursor are never reused)", off, err)
			}
		})
	}
}
