package protocol

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

func TestChunkMetaRoundTrip(t *testing.T) {
	gapTime := time.UnixMilli(1_700_000_000_123).UTC()
	for name, m := range map[string]ChunkMeta{
		"data":        {Base: 0, Next: 10, Records: 10, RawBytes: 4096, CRC: 0xdeadbeef},
		"sealed":      {Base: 1 << 40, Next: 1<<40 + 3, Records: 3, RawBytes: 1, CRC: 0, Sealed: true},
		"gap":         {Base: 5, Next: 9, Gap: &storage.Gap{From: 5, To: 9, Records: 4, Reason: storage.GapQuotaDropped, Time: gapTime}},
		"gap-no-time": {Base: 0, Next: 1, Gap: &storage.Gap{From: 0, To: 1, Records: 1, Reason: "x"}},
	} {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			m.Encode(h)
			got, err := ParseChunkMeta(h)
			if err != nil {
				t.Fatalf("parse %v: %v", h, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
		})
	}
}

func TestNewChunkMeta(t *testing.T) {
	data := []byte("zstd frame")
	m := NewChunkMeta(storage.Chunk{Base: 3, Next: 5, Records: 2, RawBytes: 77, Data: data, Sealed: true})
	want := ChunkMeta{Base: 3, Next: 5, Records: 2, RawBytes: 77, CRC: ChunkCRC(data), Sealed: true}
	if m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestParseChunkMetaRefuses(t *testing.T) {
	good := func() http.Header {
		h := http.Header{}
		ChunkMeta{Base: 0, Next: 2, Records: 2, RawBytes: 10, CRC: 1}.Encode(h)
		return h
	}
	for name, c := range map[string]struct {
		change func(http.Header)
		want   string
	}{
		"no base":       {func(h http.Header) { h.Del(HeaderBase) }, "missing header " + HeaderBase},
		"base not int":  {func(h http.Header) { h.Set(HeaderBase, "x") }, "is not an integer"},
		"empty range":   {func(h http.Header) { h.Set(HeaderNext, "0") }, "empty or negative"},
		"negative":      {func(h http.Header) { h.Set(HeaderBase, "-1") }, "empty or negative"},
		"records":       {func(h http.Header) { h.Set(HeaderRecords, "3") }, "says 3 records"},
		"no crc":        {func(h http.Header) { h.Del(HeaderCRC) }, "missing header " + HeaderCRC},
		"crc too big":   {func(h http.Header) { h.Set(HeaderCRC, "4294967296") }, "not a CRC32-C"},
		"gap range":     {func(h http.Header) { h.Set(HeaderGapFrom, "1"); h.Set(HeaderGapTo, "2") }, "equal to the chunk range"},
		"gap no to":     {func(h http.Header) { h.Set(HeaderGapFrom, "0") }, "missing header " + HeaderGapTo},
		"gap no reason": {func(h http.Header) { h.Set(HeaderGapFrom, "0"); h.Set(HeaderGapTo, "2") }, "needs a reason"},
		"gap reason big": {func(h http.Header) {
			h.Set(HeaderGapFrom, "0")
			h.Set(HeaderGapTo, "2")
			h.Set(HeaderGapReason, strings.Repeat("r", 201))
		}, "needs a reason"},
	} {
		t.Run(name, func(t *testing.T) {
			h := good()
			c.change(h)
			if _, err := ParseChunkMeta(h); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one saying %q", err, c.want)
			}
		})
	}
}

// FuzzChunkMeta: any header values parse without panicking, and whatever parses encodes to
// headers that parse to the same metadata.
func FuzzChunkMeta(f *testing.F) {
	f.Add("0", "10", "10", "4096", "3735928559", "1", "", "", "", "")
	f.Add("5", "9", "", "", "", "", "5", "9", storage.GapQuotaDropped, "1700000000123")
	f.Add("-1", "0", "x", "-5", "99999999999", "0", "5", "", "", "nan")
	f.Add("9223372036854775807", "-9223372036854775808", "0", "0", "0", "", "0", "0", "r", "")
	f.Fuzz(func(t *testing.T, base, next, records, raw, crc, sealed, gapFrom, gapTo, gapReason, gapTime string) {
		h := http.Header{}
		for k, v := range map[string]string{HeaderBase: base, HeaderNext: next, HeaderRecords: records, HeaderRawBytes: raw,
			HeaderCRC: crc, HeaderSealed: sealed, HeaderGapFrom: gapFrom, HeaderGapTo: gapTo, HeaderGapReason: gapReason, HeaderGapTime: gapTime} {
			if v != "" {
				h.Set(k, v)
			}
		}
		m, err := ParseChunkMeta(h)
		if err != nil {
			return
		}
		if m.Next <= m.Base || m.Base < 0 {
			t.Fatalf("parsed an empty or negative range %+v", m)
		}
		if m.Gap == nil && m.Records != m.Next-m.Base {
			t.Fatalf("parsed %d records for [%d, %d)", m.Records, m.Base, m.Next)
		}
		h2 := http.Header{}
		m.Encode(h2)
		m2, err := ParseChunkMeta(h2)
		if err != nil {
			t.Fatalf("re-parse of %+v: %v", m, err)
		}
		if m.Gap != nil && m2.Gap != nil && m.Gap.Time.Equal(m2.Gap.Time) {
			m2.Gap.Time = m.Gap.Time // same instant; zero and the unix epoch's millisecond form differ in representation only
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", m2, m)
		}
	})
}

func TestProvenanceRoundTrip(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_456).UTC()
	for name, p := range map[string]Provenance{
		"plain":       {Edge: "gw-1", Partition: 3, CentralTime: now},
		"incarnation": {Edge: "gw-2", Partition: 0, Incarnation: "01HXYZ.a_b-c", CentralTime: now},
	} {
		t.Run(name, func(t *testing.T) {
			enc := NewProvenanceEncoder(p)
			user := []storage.Header{{Key: "topic", Value: []byte("t/1")}}
			for _, off := range []int64{0, 7, 1 << 50} {
				hs := enc.Append(append([]storage.Header(nil), user...), off)
				if hs[0].Key != "topic" {
					t.Fatalf("record headers not kept first: %v", hs)
				}
				got, ok := ParseProvenance(hs)
				want := p
				want.Offset = off
				if !ok || got != want {
					t.Fatalf("offset %d: got %+v ok=%v, want %+v", off, got, ok, want)
				}
				for _, h := range hs[1:] {
					if !IsProvenance(h.Key) {
						t.Fatalf("%q written as provenance but IsProvenance says no", h.Key)
					}
				}
			}
		})
	}
}

func TestParseProvenancePartial(t *testing.T) {
	got, ok := ParseProvenance([]storage.Header{{Key: ProvEdge, Value: []byte("gw")}, {Key: ProvEdgeOffset, Value: []byte("x")}})
	if ok || got.Edge != "gw" || got.Partition != -1 || got.Offset != -1 {
		t.Fatalf("got %+v ok=%v: want the edge, -1 for the missing partition and the bad offset, not ok", got, ok)
	}
	if _, ok := ParseProvenance(nil); ok {
		t.Fatal("a record without provenance parsed as forwarded")
	}
	if IsProvenance("topic") {
		t.Fatal("topic is the device's header, not provenance")
	}
}

// FuzzProvenance: any header values parse without panicking; what parses as forwarded encodes
// back to the same provenance.
func FuzzProvenance(f *testing.F) {
	f.Add("gw-1", "0", "0", "", "1700000000000")
	f.Add("", "-1", "9223372036854775807", "inc", "x")
	f.Add("e", "65536", "+5", "a.b", "")
	f.Fuzz(func(t *testing.T, edge, partition, offset, incarnation, central string) {
		var hs []storage.Header
		for _, kv := range [][2]string{{ProvEdge, edge}, {ProvEdgePartition, partition}, {ProvEdgeOffset, offset},
			{ProvEdgeIncarnation, incarnation}, {ProvCentralTime, central}} {
			if kv[1] != "" || kv[0] == ProvEdge {
				hs = append(hs, storage.Header{Key: kv[0], Value: []byte(kv[1])})
			}
		}
		p, ok := ParseProvenance(hs)
		if !ok {
			return
		}
		if _, err := strconv.Atoi(partition); err != nil || p.Partition < 0 || p.Offset < 0 {
			t.Fatalf("parsed %+v from partition %q offset %q", p, partition, offset)
		}
		got, ok := ParseProvenance(NewProvenanceEncoder(p).Append(nil, p.Offset))
		if !ok || got.Edge != p.Edge || got.Partition != p.Partition || got.Offset != p.Offset || got.Incarnation != p.Incarnation ||
			(!p.CentralTime.IsZero() && !got.CentralTime.Equal(p.CentralTime)) {
			t.Fatalf("round trip: got %+v ok=%v, want %+v", got, ok, p)
		}
	})
}
