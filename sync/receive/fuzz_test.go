package receive

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/tributary-iot/tributary/sync/protocol"
)

// FuzzParseChunk feeds arbitrary bodies and headers to the receiver's decoder: it must never
// panic, and whatever it accepts must be a dense run of records matching its headers.
func FuzzParseChunk(f *testing.F) {
	for _, c := range edgeChunks(f, 40, 1<<10) {
		f.Add(c.Data, c.Base, c.Next, int64(c.RawBytes), true)
	}
	f.Add([]byte("garbage"), int64(0), int64(1), int64(10), false)
	// Absurd declared sizes: nothing may be sized from them (a 1-byte body once made central
	// allocate 10^12 entries and die).
	f.Add([]byte{0}, int64(0), int64(1e12), int64(1e12), true)
	f.Add([]byte{0}, int64(0), int64(1e12), int64(1<<20), true)
	f.Add([]byte{0}, int64(1<<62), int64(1<<62+1<<40), int64(64<<20), true)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00}, int64(0), int64(1<<30), int64(1<<30), true)
	if cs := edgeChunks(f, 40, 1<<10); len(cs) > 0 {
		c := cs[0]
		f.Add(c.Data, c.Base, c.Base+1e12, int64(c.RawBytes), true)
		f.Add(c.Data, c.Base, c.Next, int64(1e15), true)
		f.Add(c.Data[:len(c.Data)/2], c.Base, c.Next, int64(c.RawBytes), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, base, next, raw int64, fixCRC bool) {
		h := http.Header{}
		h.Set(protocol.HeaderBase, strconv.FormatInt(base, 10))
		h.Set(protocol.HeaderNext, strconv.FormatInt(next, 10))
		h.Set(protocol.HeaderRecords, strconv.FormatInt(next-base, 10))
		h.Set(protocol.HeaderRawBytes, strconv.FormatInt(raw, 10))
		crc := protocol.ChunkCRC(body)
		if !fixCRC {
			crc ^= 1
		}
		h.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(crc), 10))
		c, err := parseChunk(h, body, 1<<20)
		if err != nil {
			return
		}
		if !fixCRC {
			t.Fatal("accepted a body with a wrong checksum")
		}
		if int64(len(c.records)) != next-base {
			t.Fatalf("accepted %d records for [%d, %d)", len(c.records), base, next)
		}
		for i, e := range c.records {
			if e.Offset != base+int64(i) {
				t.Fatalf("record %d has offset %d", i, e.Offset)
			}
		}
	})
}
