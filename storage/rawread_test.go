package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRawReadMatchesReader reads a partition with RawReader from several offsets, across sealed
// segments and the active one, decodes the stored bytes with NextBatch, RawBatch.Next and
// NextHeader, and checks they give the same records as Reader: keys, values, timestamps (none
// included) and headers (long ones, with multi-byte lengths, included).
func TestRawReadMatchesReader(t *testing.T) {
	l := openTest(t, t.TempDir(), &Options{Fsync: FsyncNone, SegmentBytes: 64 << 10, FrameBytes: 4 << 10})
	defer l.Close()
	s, _ := l.CreateStream("readings", StreamConfig{Partitions: 1})
	p := s.Partition(0)
	appendBurst := func(from, n int) {
		var wg sync.WaitGroup
		for i := from; i < from+n; i++ {
			rec := reading(fmt.Sprintf("dev-%d", i%7), i)
			switch i % 10 {
			case 3:
				rec.Timestamp = time.Time{}
			case 5:
				rec.Headers = append(rec.Headers, Header{Key: strings.Repeat("k", 130), Value: bytes.Repeat([]byte{'v'}, 20000)})
			case 6:
				rec.Headers = nil
				rec.Key = nil
			}
			wg.Add(1)
			p.AppendAsync(rec, func(_ int64, err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
	}
	// Bursts, so that batches hold many records and a start offset can fall inside one.
	n := 0
	for sealedCount(p) < 2 {
		appendBurst(n, 40)
		n += 40
		if n > 200_000 {
			t.Fatal("no segment sealed")
		}
	}
	waitFor(t, func() bool { return sealedCount(p) >= 2 })
	appendBurst(n, 40)
	n += 40
	var lastSealed int64
	for _, seg := range p.snapshot() {
		if seg.sealed() {
			lastSealed = max(lastSealed, seg.nextOffset())
		}
	}
	if lastSealed >= int64(n) {
		t.Fatalf("the active segment is empty (sealed up to %d of %d)", lastSealed, n)
	}
	for _, from := range []int64{0, 17, lastSealed - 3, lastSealed + 21, int64(n) - 1} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			want := readAll(t, p, from)
			rr := p.NewRawReader()
			var got []Entry
			next := from
			for {
				rb, err := rr.Read(next, 8<<10)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if rb.Gap != nil {
					t.Fatalf("gap %+v in a log without gaps", *rb.Gap)
				}
				first := true
				for data := rb.Data; len(data) > 0; {
					b, rest, err := NextBatch(data)
					if err != nil {
						t.Fatal(err)
					}
					if first && (b.BaseOffset > next || b.BaseOffset+int64(b.Count) <= next) {
						t.Fatalf("first batch [%d, %d) does not hold offset %d", b.BaseOffset, b.BaseOffset+int64(b.Count), next)
					}
					first = false
					var rec RawRecord
					for {
						ok, err := b.Next(&rec)
						if err != nil {
							t.Fatal(err)
						}
						if !ok {
							break
						}
						if rec.Offset < next {
							continue // below the offset asked for, in the first batch
						}
						// Copies: Data is reused by the next Read.
						e := Entry{Offset: rec.Offset, Record: Record{Key: bytes.Clone(rec.Key), Value: bytes.Clone(rec.Value)}}
						if rec.Timestamp != 0 {
							e.Timestamp = time.UnixMilli(rec.Timestamp)
						}
						hs := rec.Headers
						for range rec.HeaderCount {
							k, v, rest, ok := NextHeader(hs)
							if !ok {
								t.Fatalf("offset %d: header does not decode", rec.Offset)
							}
							e.Headers = append(e.Headers, Header{Key: string(k), Value: bytes.Clone(v)})
							hs = rest
						}
						if len(hs) != 0 {
							t.Fatalf("offset %d: %d bytes after the headers", rec.Offset, len(hs))
						}
						got = append(got, e)
					}
					data = rest
				}
				if rb.Next <= next {
					t.Fatalf("Read(%d) returned Next %d", next, rb.Next)
				}
				next = rb.Next
			}
			if len(got) != len(want) {
				t.Fatalf("raw read %d records from %d, Reader %d", len(got), from, len(want))
			}
			for i := range want {
				if !sameEntry(got[i], want[i]) {
					t.Fatalf("offset %d: raw %+v, Reader %+v", want[i].Offset, got[i], want[i])
				}
			}
		})
	}
	if _, err := p.NewRawReader().Read(int64(n), 0); !errors.Is(err, io.EOF) {
		t.Fatalf("Read at the end: %v, want io.EOF", err)
	}
}

func sameEntry(a, b Entry) bool {
	if a.Offset != b.Offset || !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) ||
		!a.Timestamp.Equal(b.Timestamp) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}
