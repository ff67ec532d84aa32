package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// corruptFixture is a log with several sealed segments and an active segment of many batches,
// built once and copied for each corruption case.
type corruptFixture struct {
	dir     string
	values  map[int64]string // every record by offset
	end     int64
	sealed  []SegmentInfo // sealed segments, in order
	batches []batchHeader // batches of the active segment, in order
	batchAt []int64       // their file positions
}

const corruptStream = "c"

func corruptOptions() *Options {
	return &Options{SegmentBytes: 8 << 10, FrameBytes: 2 << 10, MaintenanceInterval: time.Hour}
}

func buildCorruptFixture(t *testing.T) *corruptFixture {
	t.Helper()
	fx := &corruptFixture{dir: t.TempDir(), values: map[int64]string{}}
	l := openTest(t, fx.dir, corruptOptions())
	s, err := l.CreateStream(corruptStream, StreamConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := s.Partition(0)
	add := func(off int64, rec Record) { fx.values[off] = string(rec.Value) }
	for i := 0; i < 300; i++ {
		rec := reading("dev-1", i)
		off, err := p.Append(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		add(off, rec)
	}
	// Roll so the active segment holds only what follows, and wait until the rest is sealed.
	p.rollReq.Store(true)
	p.kick <- struct{}{}
	waitFor(t, func() bool { return p.Segments()[len(p.Segments())-1].Base == 300 })
	waitFor(t, func() bool { return sealedCount(p) == len(p.Segments())-1 })
	for i := 300; i < 310; i++ {
		rec := reading("dev-1", i)
		off, err := p.Append(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		add(off, rec)
	}
	// A burst of pipelined appends, so the last batches hold several records.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 310; i < 330; i++ {
		rec := reading("dev-1", i)
		wg.Add(1)
		p.AppendAsync(rec, func(off int64, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			add(off, rec)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The last batch holds one record, so truncating it at every byte stays a short table.
	rec := reading("dev-1", 330)
	off, err := p.Append(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	add(off, rec)
	fx.end = p.EndOffset()
	for _, si := range p.Segments() {
		if si.Sealed {
			fx.sealed = append(fx.sealed, si)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(fx.sealed) < 3 {
		t.Fatalf("fixture has %d sealed segments, want at least 3", len(fx.sealed))
	}
	data, err := os.ReadFile(fx.partFile(fx.dir, segmentName(300, plainExt)))
	if err != nil {
		t.Fatal(err)
	}
	for pos := 0; pos < len(data); {
		h, err := checkBatch(data[pos:])
		if err != nil {
			t.Fatal(err)
		}
		fx.batches = append(fx.batches, h)
		fx.batchAt = append(fx.batchAt, int64(pos))
		pos += int(h.Length)
	}
	return fx
}

func (fx *corruptFixture) partFile(dir, name string) string {
	return filepath.Join(dir, "streams", corruptStream, "0", name)
}

// copyTo copies the fixture's directory tree.
func (fx *corruptFixture) copyTo(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(fx.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(fx.dir, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func flipByte(t *testing.T, path string, pos int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], pos); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], pos); err != nil {
		t.Fatal(err)
	}
}

// corruptCase says what a damage must lead to.
type corruptCase struct {
	name   string
	damage func(t *testing.T, dir string)
	// missing offsets are gone without a trace (a torn tail: never acknowledged)
	missing [2]int64
	// gap, when set, is a corrupt-segment gap readers must receive where the records were
	gap [2]int64
	// quarantined: the damage is reported by Damage() and the damaged file is kept in quarantine/
	quarantined bool
	damageSeg   int64 // segment Damage() must name
	end         int64 // the offset the next append gets
	opts        *Options
}

func TestCorruptionRecovery(t *testing.T) {
	fx := buildCorruptFixture(t)
	active := fx.partFile("", segmentName(300, plainExt))
	last := len(fx.batches) - 1
	lastBatch, lastPos := fx.batches[last], fx.batchAt[last]
	mid := len(fx.batches) / 2
	midBatch, midPos := fx.batches[mid], fx.batchAt[mid]
	seg1 := fx.sealed[1] // a sealed segment in the middle
	zst1 := fx.partFile("", segmentName(seg1.Base, sealedExt))
	idx1 := fx.partFile("", segmentName(seg1.Base, indexExt))
	at := func(dir, rel string) string { return filepath.Join(dir, rel) }
	frames := func(t *testing.T, dir string) []frameInfo {
		b, err := os.ReadFile(at(dir, idx1))
		if err != nil {
			t.Fatal(err)
		}
		_, _, fr, err := decodeIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		return fr
	}

	var cases []corruptCase
	for k := int64(0); k < int64(lastBatch.Length); k++ {
		cases = append(cases, corruptCase{
			name:    fmt.Sprintf("truncate-last-batch-at-byte-%d", k),
			damage:  func(t *testing.T, dir string) { must(t, os.Truncate(at(dir, active), lastPos+k)) },
			missing: [2]int64{lastBatch.BaseOffset, fx.end},
			end:     lastBatch.BaseOffset,
		})
	}
	cases = append(cases,
		corruptCase{
			name: "zero-filled-tail",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(at(dir, active), os.O_APPEND|os.O_WRONLY, 0)
				must(t, err)
				_, err = f.Write(make([]byte, 4096))
				must(t, err)
				must(t, f.Close())
			},
			end: fx.end,
		},
		corruptCase{
			name:    "flipped-byte-in-last-batch-header",
			damage:  func(t *testing.T, dir string) { flipByte(t, at(dir, active), lastPos+13) },
			missing: [2]int64{lastBatch.BaseOffset, fx.end},
			end:     lastBatch.BaseOffset,
		},
		corruptCase{
			name:    "flipped-byte-in-last-batch-body",
			damage:  func(t *testing.T, dir string) { flipByte(t, at(dir, active), lastPos+int64(lastBatch.Length)-3) },
			missing: [2]int64{lastBatch.BaseOffset, fx.end},
			end:     lastBatch.BaseOffset,
		},
		// Damage before intact batches is not a torn write: those records were acknowledged.
		// They become a gap and their offsets are not handed out again.
		corruptCase{
			name:        "flipped-byte-in-middle-batch-header",
			damage:      func(t *testing.T, dir string) { flipByte(t, at(dir, active), midPos+12) },
			gap:         [2]int64{midBatch.BaseOffset, fx.end},
			quarantined: true, damageSeg: 300, end: fx.end,
		},
		corruptCase{
			name:        "flipped-byte-in-middle-batch-length",
			damage:      func(t *testing.T, dir string) { flipByte(t, at(dir, active), midPos+1) },
			gap:         [2]int64{midBatch.BaseOffset, fx.end},
			quarantined: true, damageSeg: 300, end: fx.end,
		},
		corruptCase{
			name:        "flipped-byte-in-middle-batch-body",
			damage:      func(t *testing.T, dir string) { flipByte(t, at(dir, active), midPos+batchHeaderSize+5) },
			gap:         [2]int64{midBatch.BaseOffset, fx.end},
			quarantined: true, damageSeg: 300, end: fx.end,
		},
	)
	// A frame that fails its CRC costs that frame only: the segment's good frames are kept.
	fr1 := frames(t, fx.dir)
	if len(fr1) < 3 {
		t.Fatalf("sealed segment %d has %d frames, want at least 3", seg1.Base, len(fr1))
	}
	for _, k := range []int{0, 1, len(fr1) - 1} {
		cases = append(cases, corruptCase{
			name: fmt.Sprintf("sealed-frame-%d-of-%d-bad-crc", k, len(fr1)),
			damage: func(t *testing.T, dir string) {
				fi := frames(t, dir)[k]
				flipByte(t, at(dir, zst1), fi.pos+int64(fi.compLen)/2)
			},
			gap:         [2]int64{fr1[k].base, fr1[k].next()},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		})
	}
	cases = append(cases,
		corruptCase{
			name: "sealed-all-frames-bad-crc",
			damage: func(t *testing.T, dir string) {
				for _, fi := range frames(t, dir) {
					flipByte(t, at(dir, zst1), fi.pos+int64(fi.compLen)/2)
				}
			},
			gap:         [2]int64{seg1.Base, seg1.Next},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		},
		corruptCase{
			name: "sealed-segment-truncated",
			damage: func(t *testing.T, dir string) {
				st, err := os.Stat(at(dir, zst1))
				must(t, err)
				must(t, os.Truncate(at(dir, zst1), st.Size()-10))
			},
			gap:         [2]int64{seg1.Base, seg1.Next},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		},
		corruptCase{
			name: "frame-descriptor-damaged-index-intact",
			damage: func(t *testing.T, dir string) {
				fi := frames(t, dir)[1]
				flipByte(t, at(dir, zst1), fi.pos-descriptorFrame+8+9) // the record count
			},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		},
		corruptCase{
			name: "frame-descriptor-damaged-index-missing",
			damage: func(t *testing.T, dir string) {
				fi := frames(t, dir)[1]
				flipByte(t, at(dir, zst1), fi.pos-descriptorFrame+8+9)
				must(t, os.Remove(at(dir, idx1)))
			},
			gap:         [2]int64{seg1.Base, seg1.Next},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		},
		corruptCase{
			name:   "missing-index",
			damage: func(t *testing.T, dir string) { must(t, os.Remove(at(dir, idx1))) },
			end:    fx.end,
		},
		corruptCase{
			name:   "damaged-index",
			damage: func(t *testing.T, dir string) { flipByte(t, at(dir, idx1), indexHeaderSize+indexEntrySize+4) },
			end:    fx.end,
		},
		corruptCase{
			name:   "truncated-index",
			damage: func(t *testing.T, dir string) { must(t, os.Truncate(at(dir, idx1), indexHeaderSize+3)) },
			end:    fx.end,
		},
		corruptCase{
			name: "interrupted-seal-tmp-files",
			damage: func(t *testing.T, dir string) {
				// A seal of the active segment's predecessor that stopped while writing.
				must(t, os.WriteFile(at(dir, fx.partFile("", segmentName(300, sealedExt+tmpExt))), []byte("partial zstd"), 0o644))
				must(t, os.WriteFile(at(dir, fx.partFile("", segmentName(300, indexExt+tmpExt))), []byte("partial"), 0o644))
			},
			end: fx.end,
		},
		corruptCase{
			name: "interrupted-seal-index-without-segment",
			damage: func(t *testing.T, dir string) {
				// The index was renamed, the .zst was not: the plain segment is the truth.
				b, err := os.ReadFile(at(dir, idx1))
				must(t, err)
				must(t, os.WriteFile(at(dir, fx.partFile("", segmentName(300, indexExt))), b, 0o644))
				must(t, os.WriteFile(at(dir, fx.partFile("", segmentName(fx.end+100, indexExt))), b, 0o644))
			},
			end: fx.end,
		},
		corruptCase{
			name:   "interrupted-seal-plain-and-sealed",
			damage: func(t *testing.T, dir string) { restorePlain(t, at(dir, zst1)) },
			end:    fx.end,
		},
		corruptCase{
			name: "interrupted-seal-plain-and-damaged-sealed",
			damage: func(t *testing.T, dir string) {
				restorePlain(t, at(dir, zst1))
				fi := frames(t, dir)[0]
				flipByte(t, at(dir, zst1), fi.pos+3)
			},
			quarantined: true, damageSeg: seg1.Base, end: fx.end,
		},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fx.copyTo(t)
			c.damage(t, dir)
			checkCorruptionCase(t, fx, dir, c)
		})
	}
}

// restorePlain writes the plain segment a sealed one was made from next to it, as a seal that
// stopped after renaming the .zst but before deleting the .log leaves it.
func restorePlain(t *testing.T, zst string) {
	t.Helper()
	b, err := os.ReadFile(zst)
	must(t, err)
	raw, err := decoderOnce().DecodeAll(b, make([]byte, 0, 64<<10))
	must(t, err)
	must(t, os.WriteFile(strings.TrimSuffix(zst, sealedExt)+plainExt, raw, 0o644))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkCorruptionCase(t *testing.T, fx *corruptFixture, dir string, c corruptCase) {
	t.Helper()
	opts := corruptOptions()
	if c.opts != nil {
		opts = c.opts
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open after damage: %v", err)
	}
	defer l.Close()
	s, err := l.Stream(corruptStream)
	must(t, err)
	p := s.Partition(0)
	checkDamageReport(t, l, dir, c)

	in := func(r [2]int64, off int64) bool { return off >= r[0] && off < r[1] }
	want := int64(0)

	for _, e := range readAll(t, p, 0) {
		if e.Gap != nil {
			if e.Gap.From != c.gap[0] || e.Gap.To != c.gap[1] || e.Gap.Reason != GapCorrupt ||
				e.Gap.Records != c.gap[1]-c.gap[0] || e.Gap.Time.IsZero() {
				t.Fatalf("gap %+v, want corrupt-segment [%d, %d)", *e.Gap, c.gap[0], c.gap[1])
			}
			if e.Offset != want {
				t.Fatalf("gap at %d, want it at %d", e.Offset, want)
			}
			want = e.Gap.To
			continue
		}
		for in(c.missing, want) || in(c.gap, want) {
			want++
		}
		if e.Offset != want {
			t.Fatalf("read offset %d, want %d", e.Offset, want)
		}
		if string(e.Value) != fx.values[e.Offset] {
			t.Fatalf("offset %d: value %q, want %q", e.Offset, e.Value, fx.values[e.Offset])
		}
		want++
	}
	if want != c.end {
		t.Fatalf("read up to %d, want %d", want, c.end)
	}
	if c.gap[1] > c.gap[0] && !containsGap(p.Gaps(), c.gap) {
		t.Fatalf("Gaps() = %+v, want one for %v", p.Gaps(), c.gap)
	}
	// Appends continue, at the offset after everything handed out before.
	off, err := p.Append(context.Background(), reading("dev-2", 1))
	if err != nil || off != c.end {
		t.Fatalf("append after recovery: offset %d, %v; want %d", off, err, c.end)
	}
	if got := readAll(t, p, off); len(got) != 1 || string(got[0].Value) != string(reading("dev-2", 1).Value) {
		t.Fatalf("appended record reads back as %+v", got)
	}
	// A second open finds nothing new to repair and the same records.
	must(t, l.Close())
	l2, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	defer l2.Close()
	if d := l2.Damage(); len(d) > 0 {
		t.Fatalf("second open still finds damage: %v", d[0])
	}
	s2, _ := l2.Stream(corruptStream)
	if got := s2.Partition(0).EndOffset(); got != c.end+1 {
		t.Fatalf("second open: end %d, want %d", got, c.end+1)
	}
	if c.gap[1] > c.gap[0] && !containsGap(s2.Partition(0).Gaps(), c.gap) {
		t.Fatalf("gap not persisted: %+v", s2.Partition(0).Gaps())
	}
}

func containsGap(gaps []Gap, r [2]int64) bool {
	for _, g := range gaps {
		if g.From == r[0] && g.To == r[1] && g.Reason == GapCorrupt {
			return true
		}
	}
	return false
}

func checkDamageReport(t *testing.T, l *Log, dir string, c corruptCase) {
	t.Helper()
	d := l.Damage()
	q, _ := os.ReadDir(filepath.Join(dir, "quarantine", corruptStream, "0"))
	if !c.quarantined {
		if len(d) > 0 || len(q) > 0 {
			t.Fatalf("unexpected damage report %v, quarantine %v", d, q)
		}
		return
	}
	if len(d) != 1 {
		t.Fatalf("Damage() = %v, want one report", d)
	}
	ce := d[0]
	var target *CorruptionError
	if !errors.As(error(ce), &target) || ce.Stream != corruptStream || ce.Partition != 0 || ce.Segment != c.damageSeg || ce.Offset < c.damageSeg {
		t.Fatalf("damage report %+v: want stream %q partition 0 segment %d and an offset", ce, corruptStream, c.damageSeg)
	}
	if len(q) == 0 {
		t.Fatal("nothing in quarantine/")
	}
}

// TestCorruptionFoundAtReadTime damages a sealed frame and opens with SkipVerifyOnOpen, so the
// damage is found by a reader (and by ReadChunk): the segment is quarantined and readers get a gap.
func TestCorruptionFoundAtReadTime(t *testing.T) {
	fx := buildCorruptFixture(t)
	seg1 := fx.sealed[1]
	for _, via := range []string{"reader", "chunk"} {
		t.Run(via, func(t *testing.T) {
			dir := fx.copyTo(t)
			zst := fx.partFile(dir, segmentName(seg1.Base, sealedExt))
			b, err := os.ReadFile(fx.partFile(dir, segmentName(seg1.Base, indexExt)))
			must(t, err)
			_, _, fr, err := decodeIndex(b)
			must(t, err)
			flipByte(t, zst, fr[len(fr)-1].pos+5)
			opts := corruptOptions()
			opts.SkipVerifyOnOpen = true
			l := openTest(t, dir, opts)
			defer l.Close()
			if len(l.Damage()) != 0 {
				t.Fatal("damage found at open despite SkipVerifyOnOpen")
			}
			s, _ := l.Stream(corruptStream)
			p := s.Partition(0)
			var gap *Gap
			if via == "reader" {
				for _, e := range readAll(t, p, 0) {
					if e.Gap != nil {
						if gap != nil {
							t.Fatalf("second gap %+v", *e.Gap)
						}
						gap = e.Gap
					} else if e.Offset >= seg1.Base && e.Offset < seg1.Next && e.Offset >= fr[len(fr)-1].base {
						t.Fatalf("read offset %d from the damaged frame", e.Offset)
					}
				}
			} else {
				for from := int64(0); ; {
					c, err := p.ReadChunk(from, 1<<20)
					if err == io.EOF {
						break
					}
					must(t, err)
					if c.Gap != nil {
						gap = c.Gap
					}
					from = c.Next
				}
			}
			if gap == nil || gap.Reason != GapCorrupt || gap.To != seg1.Next || gap.From < seg1.Base {
				t.Fatalf("gap %+v, want corrupt-segment up to %d", gap, seg1.Next)
			}
			d := l.Damage()
			if len(d) != 1 || d[0].Segment != seg1.Base || d[0].Partition != 0 || d[0].Stream != corruptStream || d[0].Offset != fr[len(fr)-1].base {
				t.Fatalf("Damage() = %+v", d)
			}
			if _, err := os.Stat(filepath.Join(dir, "quarantine", corruptStream, "0", segmentName(seg1.Base, sealedExt))); err != nil {
				t.Fatalf("damaged segment not in quarantine: %v", err)
			}
			// The good frames were kept: readers from the start get every record but those of
			// the damaged frame, which is one gap, and appends continue.
			lost := [2]int64{fr[len(fr)-1].base, seg1.Next}
			checkSalvaged := func(p *Partition, extra int64) {
				t.Helper()
				got := readAll(t, p, 0)
				var gaps int
				for _, e := range got {
					if e.Gap != nil {
						gaps++
						if e.Gap.From != lost[0] || e.Gap.To != lost[1] {
							t.Fatalf("gap %+v, want %v", *e.Gap, lost)
						}
					} else if string(e.Value) != fx.values[e.Offset] && e.Offset < fx.end {
						t.Fatalf("offset %d: value %q, want %q", e.Offset, e.Value, fx.values[e.Offset])
					}
				}
				if gaps != 1 || int64(len(got)) != fx.end-(lost[1]-lost[0])+1+extra {
					t.Fatalf("%d entries with %d gaps after salvage", len(got), gaps)
				}
			}
			checkSalvaged(p, 0)
			if off, err := p.Append(context.Background(), reading("dev-2", 1)); err != nil || off != fx.end {
				t.Fatalf("append: %d %v", off, err)
			}
			// On disk too: a reopen that checks every frame finds nothing wrong and the same.
			must(t, l.Close())
			l2 := openTest(t, dir, corruptOptions())
			defer l2.Close()
			if d := l2.Damage(); len(d) != 0 {
				t.Fatalf("reopen finds damage: %v", d[0])
			}
			s2, _ := l2.Stream(corruptStream)
			checkSalvaged(s2.Partition(0), 1)
		})
	}
}

// Sealing reads the plain segment as a stream; one that ends inside a batch, or holds a damaged
// batch, is refused with the byte position rather than sealed short.
func TestSealFileRefusesCutOrDamagedSegment(t *testing.T) {
	var raw []byte
	off := int64(0)
	for i := range 6 {
		recs := sampleRecords(2, i)
		raw = append(raw, encodeBatch(off, recs)...)
		off += int64(len(recs))
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	must(t, err)
	defer f.Close()
	frames, err := sealFile(bytes.NewReader(raw), f, 200)
	must(t, err)
	var count uint32
	for _, fi := range frames {
		count += fi.count
	}
	if int64(count) != off || len(frames) < 2 {
		t.Fatalf("%d frames holding %d records, want several holding %d", len(frames), count, off)
	}
	for name, cut := range map[string][]byte{
		"ends inside a header": raw[:len(raw)-len(encodeBatch(0, sampleRecords(2, 5)))+10],
		"ends inside a body":   raw[:len(raw)-3],
	} {
		if _, err := sealFile(bytes.NewReader(cut), f, 200); !errors.Is(err, errTruncated) {
			t.Errorf("%s: err %v, want errTruncated", name, err)
		}
	}
	bad := bytes.Clone(raw)
	bad[len(bad)-1] ^= 0xff
	if _, err := sealFile(bytes.NewReader(bad), f, 200); !errors.Is(err, errBatchCRC) {
		t.Errorf("damaged batch: err %v, want errBatchCRC", err)
	}
}

// Readers that find a damaged sealed segment at the same time all get its gap: none may take
// the hole the segment leaves for a range retention removed, and skip it silently.
func TestConcurrentReadersAllGetReadTimeGap(t *testing.T) {
	fx := buildCorruptFixture(t)
	seg1 := fx.sealed[1]
	for round := range 5 {
		dir := fx.copyTo(t)
		b, err := os.ReadFile(fx.partFile(dir, segmentName(seg1.Base, indexExt)))
		must(t, err)
		_, _, fr, err := decodeIndex(b)
		must(t, err)
		bad := fr[len(fr)-1]
		flipByte(t, fx.partFile(dir, segmentName(seg1.Base, sealedExt)), bad.pos+5)
		opts := corruptOptions()
		opts.SkipVerifyOnOpen = true
		l := openTest(t, dir, opts)
		s, _ := l.Stream(corruptStream)
		p := s.Partition(0)

		const readers = 16
		start := make(chan struct{})
		errs := make(chan error, readers)
		for range readers {
			go func() {
				<-start
				r := p.NewReader(bad.base, nil)
				want := bad.base
				for {
					e, err := r.Next(context.Background())
					if err == io.EOF {
						break
					}
					if err != nil {
						errs <- err
						return
					}
					if e.Offset != want {
						errs <- fmt.Errorf("entry at %d, want %d: offsets %d..%d skipped without a gap", e.Offset, want, want, e.Offset)
						return
					}
					if e.Gap != nil {
						want = e.Gap.To
					} else {
						want++
					}
				}
				if want != fx.end {
					errs <- fmt.Errorf("read up to %d, want %d", want, fx.end)
					return
				}
				errs <- nil
			}()
		}
		close(start)
		for range readers {
			if err := <-errs; err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
		must(t, l.Close())
	}
}

// A batch damaged before its frame was compressed passes the frame's CRC: no frame can be told
// apart as the bad one, so the reader that finds it quarantines the whole segment (and does not
// salvage it into an identical copy and find the same damage forever).
func TestBadBatchInsideGoodFrameQuarantinesSegment(t *testing.T) {
	fx := buildCorruptFixture(t)
	seg1 := fx.sealed[1]
	dir := fx.copyTo(t)
	zst := fx.partFile(dir, segmentName(seg1.Base, sealedExt))
	idx := fx.partFile(dir, segmentName(seg1.Base, indexExt))
	b, err := os.ReadFile(idx)
	must(t, err)
	_, next, frames, err := decodeIndex(b)
	must(t, err)
	file, err := os.ReadFile(zst)
	must(t, err)
	var out []byte
	var rebuilt []frameInfo
	for i, fi := range frames {
		comp := file[fi.pos : fi.pos+int64(fi.compLen)]
		if i == 1 {
			raw, err := decompressFrame(comp, int(fi.rawLen))
			must(t, err)
			raw[len(raw)-2] ^= 0x5a // inside the frame's last batch: its batch CRC fails
			comp = compressFrame(raw)
		}
		fi.compLen, fi.crc = uint32(len(comp)), crc32.Checksum(comp, castagnoli)
		fi.pos = int64(len(out)) + descriptorFrame
		desc := make([]byte, descriptorFrame)
		putDescriptor(desc, fi)
		out = append(append(out, desc...), comp...)
		rebuilt = append(rebuilt, fi)
	}
	must(t, os.WriteFile(zst, out, 0o644))
	must(t, os.WriteFile(idx, encodeIndex(seg1.Base, next, rebuilt), 0o644))

	l := openTest(t, dir, corruptOptions())
	defer l.Close()
	if d := l.Damage(); len(d) != 0 {
		t.Fatalf("damage found at open, where only frame CRCs are checked: %v", d[0])
	}
	s, _ := l.Stream(corruptStream)
	done := make(chan []Entry, 1)
	go func() { done <- readAll(t, s.Partition(0), 0) }()
	var got []Entry
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reader still busy after 10s: the damage keeps coming back")
	}
	var gaps []Gap
	for _, e := range got {
		if e.Gap != nil {
			gaps = append(gaps, *e.Gap)
		}
	}
	// The reader had read the records before the bad batch; the gap covers the rest.
	if len(gaps) != 1 || gaps[0].From < seg1.Base || gaps[0].To != seg1.Next {
		t.Fatalf("gaps %+v, want one ending at %d", gaps, seg1.Next)
	}
	if !containsGap(s.Partition(0).Gaps(), [2]int64{seg1.Base, seg1.Next}) {
		t.Fatalf("Gaps() = %+v, want the whole segment [%d, %d)", s.Partition(0).Gaps(), seg1.Base, seg1.Next)
	}
	want := int64(0)
	for _, e := range got {
		if e.Offset != want {
			t.Fatalf("entry at %d, want %d", e.Offset, want)
		}
		if want++; e.Gap != nil {
			want = e.Gap.To
		}
	}
	if d := l.Damage(); len(d) != 1 || d[0].Segment != seg1.Base {
		t.Fatalf("Damage() = %v", d)
	}
}
