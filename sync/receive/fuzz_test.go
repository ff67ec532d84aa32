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
