package storage

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The golden files pin on-disk format version 1: a sealed segment with its index holding
// offsets [0, 40), and a plain (active) segment holding [40, 60), made from a fixed input.
const goldenDir = "testdata/format-v1"

func goldenRecords() []Record {
	recs := make([]Record, 60)
	for i := range recs {
		dev := fmt.Sprintf("dev-%02d", i%5)
		recs[i] = Record{
			Key:       []byte(dev),
			Value:     fmt.Appendf(nil, `{"device":%q,"seq":%d,"temp":%.1f,"hum":%d}`, dev, i/5, 20+float64(i%7)/10, 40+i%3),
			Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i)*1000 - int64(i%3)*7),
			Headers:   []Header{{"topic", []byte("devices/" + dev + "/readings")}},
		}
		switch i % 10 {
		case 4:
			recs[i].Headers = nil
		case 7:
			recs[i].Timestamp = time.Time{}
			recs[i].Headers = append(recs[i].Headers, Header{"content-type", []byte("application/json")})
		case 9:
			recs[i].Value = nil
		}
	}
	return recs
}

// goldenFiles encodes the fixed input with the current encoder.
func goldenFiles(t *testing.T) (zst, idx, plain []byte) {
	t.Helper()
	recs := goldenRecords()
	batches := func(from int, sizes []int) []byte {
		var raw []byte
		for _, n := range sizes {
			raw = append(raw, encodeBatch(int64(from), recs[from:from+n])...)
			from += n
		}
		return raw
	}
	sealedRaw := batches(0, []int{1, 3, 5, 7, 9, 15})
	plain = batches(40, []int{1, 4, 15})
	f, err := os.Create(filepath.Join(t.TempDir(), "seal"))
	must(t, err)
	defer f.Close()
	frames, err := sealFile(bytes.NewReader(sealedRaw), f, 700)
	must(t, err)
	zst, err = os.ReadFile(f.Name())
	must(t, err)
	return zst, encodeIndex(0, 40, frames), plain
}

var goldenNames = [3]string{segmentName(0, sealedExt), segmentName(0, indexExt), segmentName(40, plainExt)}

func TestGoldenFormatV1(t *testing.T) {
	zst, idx, plain := goldenFiles(t)
	if *update {
		must(t, os.MkdirAll(goldenDir, 0o755))
		for i, b := range [][]byte{zst, idx, plain} {
			must(t, os.WriteFile(filepath.Join(goldenDir, goldenNames[i]), b, 0o644))
		}
	}
	var golden [3][]byte
	for i, name := range goldenNames {
		b, err := os.ReadFile(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenFormatV1 -update to create the golden files)", err)
		}
		golden[i] = b
	}

	t.Run("encoder", func(t *testing.T) {
		// The plain segment is all ours: byte for byte.
		if !bytes.Equal(plain, golden[2]) {
			t.Fatal("plain segment encoding changed: this is a format change; bump the version byte, keep reading version 1, and add new golden files")
		}
		// zstd's compressed bytes may change with a klauspost/compress upgrade without any
		// change to our format, so the sealed segment is compared by what its frames decode to,
		// and the index and descriptors by every field that does not depend on the compressor.
		gotFrames, wantFrames := goldenFrames(t, zst, idx), goldenFrames(t, golden[0], golden[1])
		if len(gotFrames) != len(wantFrames) {
			t.Fatalf("%d frames, golden has %d", len(gotFrames), len(wantFrames))
		}
		for i := range gotFrames {
			g, w := gotFrames[i], wantFrames[i]
			if g.base != w.base || g.count != w.count || g.rawLen != w.rawLen || g.maxTS != w.maxTS || !bytes.Equal(g.raw, w.raw) {
				t.Fatalf("frame %d: base %d count %d raw %d maxTS %d, golden %d %d %d %d (or raw bytes differ)",
					i, g.base, g.count, g.rawLen, g.maxTS, w.base, w.count, w.rawLen, w.maxTS)
			}
		}
		if !bytes.Equal(idx[:indexHeaderSize], golden[1][:indexHeaderSize]) {
			t.Fatal("index header changed")
		}
		if !bytes.Equal(zst, golden[0]) || !bytes.Equal(idx, golden[1]) {
			t.Log("sealed bytes differ from the golden files while the content matches: the zstd encoder changed; rerun with -update")
		}
	})

	t.Run("reader", func(t *testing.T) {
		// A log whose stream "golden" holds exactly the golden files.
		dir := t.TempDir()
		l := openTest(t, dir, nil)
		_, err := l.CreateStream("golden", StreamConfig{Partitions: 1})
		must(t, err)
		must(t, l.Close())
		pdir := filepath.Join(dir, "streams", "golden", "0")
		must(t, os.RemoveAll(pdir))
		must(t, os.MkdirAll(pdir, 0o755))
		for i, name := range goldenNames {
			must(t, os.WriteFile(filepath.Join(pdir, name), golden[i], 0o644))
		}
		l = openTest(t, dir, nil)
		defer l.Close()
		if d := l.Damage(); len(d) > 0 {
			t.Fatalf("golden files reported as damaged: %v", d[0])
		}
		s, err := l.Stream("golden")
		must(t, err)
		p := s.Partition(0)
		segs := p.Segments()
		if len(segs) != 2 || !segs[0].Sealed || segs[1].Sealed || p.EndOffset() != 60 {
			t.Fatalf("segments %+v, end %d", segs, p.EndOffset())
		}
		want := goldenRecords()
		got := readAll(t, p, 0)
		if len(got) != len(want) {
			t.Fatalf("read %d records, want %d", len(got), len(want))
		}
		for i, e := range got {
			if e.Offset != int64(i) || !equalRecords(e.Record, want[i]) {
				t.Fatalf("offset %d: %+v, want %+v", e.Offset, e.Record, want[i])
			}
		}
		if probs, err := l.Verify(); err != nil || len(probs) > 0 {
			t.Fatalf("verify golden files: %v %v", probs, err)
		}
	})
}

type goldenFrame struct {
	frameInfo
	raw []byte
}

// goldenFrames reads a sealed file through its index, checking descriptors and checksums.
func goldenFrames(t *testing.T, zst, idx []byte) []goldenFrame {
	t.Helper()
	base, next, frames, err := decodeIndex(idx)
	if err != nil || base != 0 || next != 40 || !indexFits(frames, int64(len(zst))) {
		t.Fatalf("index: base %d next %d, %v", base, next, err)
	}
	var out []goldenFrame
	for _, fi := range frames {
		d, err := parseDescriptor(zst[fi.pos-descriptorFrame:])
		if err != nil || d.withPos(fi.pos) != fi {
			t.Fatalf("descriptor of frame at %d: %+v, index %+v, %v", fi.pos, d, fi, err)
		}
		if binary.LittleEndian.Uint32(zst[fi.pos-descriptorFrame:]) != skippableMagic {
			t.Fatal("descriptor is not a zstd skippable frame")
		}
		raw, err := decompressFrame(zst[fi.pos:fi.pos+int64(fi.compLen)], int(fi.rawLen))
		must(t, err)
		out = append(out, goldenFrame{fi, raw})
	}
	return out
}
