package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestDamagedMetaIsQuarantinedAndRebuilt: whatever damage meta.db has, Open moves it to
// quarantine/, rebuilds the stream configs from the stream folders, keeps every record, reports
// the range below a partition's first segment as a gap (its gap record may be what was lost), and
// opens; the next Open finds a sound file.
func TestDamagedMetaIsQuarantinedAndRebuilt(t *testing.T) {
	damages := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"both meta pages overwritten", func(t *testing.T, path string) { overwrite(t, path, 0, 8192) }},
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}},
		{"data pages overwritten", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			overwrite(t, path, 8192, int(st.Size())-8192)
		}},
		{"stream config unreadable", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o644, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketStreams).Put([]byte("readings"), []byte("{\"partitions\":"))
			}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, dir, &Options{SegmentBytes: 2048})
			want := map[string]int{}
			for _, sc := range []struct {
				name  string
				parts int
			}{{"readings", 2}, {"power", 1}} {
				s, err := l.CreateStream(sc.name, StreamConfig{Partitions: sc.parts})
				if err != nil {
					t.Fatal(err)
				}
				for i := range 60 {
					if _, _, err := s.Append(context.Background(), reading("dev-"+string(rune('a'+i%5)), i)); err != nil {
						t.Fatal(err)
					}
				}
				want[sc.name] = 60
			}
			if err := l.SetCursor("forwarder", "power", 0, 10); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// power/0 lost its first segment (retention, say): with a sound meta.db that is
			// nothing to report, but after a rebuild nobody can tell it was not a dropped range.
			pdir := filepath.Join(dir, "streams", "power", "0")
			first := firstSegmentFiles(t, pdir)
			for _, f := range first {
				os.Remove(filepath.Join(pdir, f))
			}
			removed := int64(-1)
			d.damage(t, filepath.Join(dir, "meta.db"))

			l, err := Open(dir, nil)
			if err != nil {
				t.Fatalf("Open with a damaged meta.db: %v", err)
			}
			rep := l.MetaRepair()
			if rep == nil || rep.Quarantined == "" || rep.Cause == "" || rep.Lost == "" {
				t.Fatalf("MetaRepair() = %+v, want the cause, where the file went and what was lost", rep)
			}
			if _, err := os.Stat(rep.Quarantined); err != nil || !strings.HasPrefix(rep.Quarantined, filepath.Join(dir, "quarantine")) {
				t.Fatalf("quarantined copy %q: %v", rep.Quarantined, err)
			}
			t.Logf("repair: %+v", *rep)
			for name, n := range want {
				s, err := l.Stream(name)
				if err != nil {
					t.Fatalf("stream %s after rebuild: %v", name, err)
				}
				if name == "readings" && s.Partitions() != 2 {
					t.Fatalf("readings rebuilt with %d partitions, want 2", s.Partitions())
				}
				got := 0
				for i := range s.Partitions() {
					for _, e := range readAll(t, s.Partition(i), 0) {
						if e.Gap == nil {
							got++
						}
					}
				}
				if name == "power" {
					removed = int64(n - got)
				} else if got != n {
					t.Errorf("stream %s: %d records after rebuild, want %d", name, got, n)
				}
			}
			ps, _ := l.Stream("power")
			p := ps.Partition(0)
			start := p.StartOffset()
			if removed <= 0 || start != removed {
				t.Fatalf("power/0 starts at %d with %d records gone: the test's removal did not work", start, removed)
			}
			gaps := p.Gaps()
			if len(gaps) != 1 || gaps[0].From != 0 || gaps[0].To != start || gaps[0].Reason != GapMetaRebuilt {
				t.Errorf("power/0 gaps %+v, want [0, %d) %s", gaps, start, GapMetaRebuilt)
			}
			if _, _, err := ps.Append(context.Background(), reading("dev-z", 99)); err != nil {
				t.Fatalf("append after rebuild: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openTest(t, dir, nil)
			defer l.Close()
			if rep := l.MetaRepair(); rep != nil {
				t.Errorf("second open repaired again: %+v", rep)
			}
			ps, _ = l.Stream("power")
			if g := ps.Partition(0).Gaps(); len(g) != 1 {
				t.Errorf("gap not kept across reopen: %+v", g)
			}
		})
	}
}

func overwrite(t *testing.T, path string, off, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(strings.Repeat("\xab", n)), int64(off)); err != nil {
		t.Fatal(err)
	}
}

// firstSegmentFiles names the files of the partition's lowest-based segment.
func firstSegmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var low int64 = -1
	byBase := map[int64][]string{}
	for _, e := range entries {
		base, _, ok := parseSegmentName(e.Name())
		if !ok {
			continue
		}
		byBase[base] = append(byBase[base], e.Name())
		if low < 0 || base < low {
			low = base
		}
	}
	if len(byBase) < 2 {
		t.Fatalf("partition %s has %d segments; the test needs a second one", dir, len(byBase))
	}
	return byBase[low]
}
