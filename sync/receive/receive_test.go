package receive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// edgeChunks appends n records to a fresh edge partition and returns its chunks in order.
func edgeChunks(t testing.TB, n, maxRaw int) []storage.Chunk {
	log, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf(`{"device":"d-%d","seq":%d,"temp_c":21.5}`, i%7, i)
		if _, err := st.Partition(0).Append(t.Context(), storage.Record{Key: []byte(fmt.Sprintf("d-%d", i%7)), Value: []byte(v), Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var out []storage.Chunk
	for off := int64(0); ; {
		c, err := st.Partition(0).ReadChunk(off, maxRaw)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
		off = c.Next
	}
}

type harness struct {
	t     *testing.T
	log   *storage.Log
	rcv   *Receiver
	srv   *httptest.Server
	token string
}

func newHarness(t *testing.T) *harness {
	log, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := New(Config{Log: log, MaxBodyBytes: 64 << 10, ReorderWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	token, err := rcv.AddEdge("gw-1")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, log: log, rcv: rcv, srv: httptest.NewServer(rcv), token: token}
	t.Cleanup(func() { h.srv.Close(); log.Close() })
	return h
}

func chunkHeaders(c storage.Chunk) http.Header {
	h := http.Header{}
	h.Set(protocol.HeaderBase, strconv.FormatInt(c.Base, 10))
	h.Set(protocol.HeaderNext, strconv.FormatInt(c.Next, 10))
	h.Set(protocol.HeaderRecords, strconv.Itoa(c.Records))
	h.Set(protocol.HeaderRawBytes, strconv.Itoa(c.RawBytes))
	h.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC(c.Data)), 10))
	return h
}

func (h *harness) post(path string, hdr http.Header, body []byte, token string) (int, protocol.Error, protocol.Position) {
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(protocol.HeaderEdge, "gw-1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e protocol.Error
	var p protocol.Position
	if resp.StatusCode == http.StatusOK {
		json.Unmarshal(b, &p)
	} else {
		json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e, p
}

func (h *harness) stored() int64 {
	st, err := h.log.Stream("readings")
	if err != nil {
		return 0
	}
	var n int64
	for i := 0; i < st.Partitions(); i++ {
		n += st.Partition(i).EndOffset()
	}
	return n
}

// TestBadRequests sends every kind of bad sync request and checks each gets its 4xx with a
// reason and changes nothing; then the good chunks apply, and a repeat is acknowledged only.
func TestBadRequests(t *testing.T) {
	h := newHarness(t)
	chunks := edgeChunks(t, 300, 4<<10)
	if len(chunks) < 3 {
		t.Fatalf("want several chunks, got %d", len(chunks))
	}
	good := chunks[0]
	path := protocol.SyncPath("readings", 0)
	mod := func(fn func(http.Header)) http.Header { hd := chunkHeaders(good); fn(hd); return hd }
	flipped := append([]byte(nil), good.Data...)
	flipped[len(flipped)/2] ^= 0x40
	cut := good.Data[:len(good.Data)/2]
	big := bytes.Repeat([]byte{1}, 100<<10)
	cases := []struct {
		name  string
		path  string
		hdr   http.Header
		body  []byte
		token string
		code  int
	}{
		{"no token", path, chunkHeaders(good), good.Data, "", 401},
		{"wrong token", path, chunkHeaders(good), good.Data, "trb_nope", 401},
		{"bad path", "/v1/sync/readings/x", chunkHeaders(good), good.Data, h.token, 400},
		{"bad stream", "/v1/sync/Bad!/0", chunkHeaders(good), good.Data, h.token, 400},
		{"missing base", path, mod(func(hd http.Header) { hd.Del(protocol.HeaderBase) }), good.Data, h.token, 400},
		{"records mismatch", path, mod(func(hd http.Header) { hd.Set(protocol.HeaderRecords, "1") }), good.Data, h.token, 400},
		{"range mismatch", path, mod(func(hd http.Header) {
			hd.Set(protocol.HeaderNext, strconv.FormatInt(good.Next+1, 10))
			hd.Set(protocol.HeaderRecords, strconv.Itoa(good.Records+1))
		}), good.Data, h.token, 400},
		{"bad crc", path, chunkHeaders(good), flipped, h.token, 400},
		{"flipped byte, crc recomputed", path, mod(func(hd http.Header) {
			hd.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC(flipped)), 10))
		}), flipped, h.token, 400},
		{"truncated, crc recomputed", path, mod(func(hd http.Header) {
			hd.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC(cut)), 10))
		}), cut, h.token, 400},
		{"not zstd", path, mod(func(hd http.Header) {
			hd.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC([]byte("hello"))), 10))
		}), []byte("hello"), h.token, 400},
		{"oversized", path, chunkHeaders(good), big, h.token, 413},
		{"raw bytes over limit", path, mod(func(hd http.Header) { hd.Set(protocol.HeaderRawBytes, "999999999999") }), good.Data, h.token, 400},
		{"out of order", path, chunkHeaders(chunks[1]), chunks[1].Data, h.token, 409},
		// Declared counts far beyond what the body holds: refused before anything is sized
		// from them (10^12 records once killed central with "out of memory").
		{"10^12 records in one byte", path, func() http.Header {
			hd := chunkHeaders(good)
			hd.Set(protocol.HeaderNext, "1000000000000")
			hd.Set(protocol.HeaderRecords, "1000000000000")
			hd.Set(protocol.HeaderRawBytes, strconv.Itoa(1<<20))
			hd.Set(protocol.HeaderCRC, strconv.FormatUint(uint64(protocol.ChunkCRC([]byte{0})), 10))
			return hd
		}(), []byte{0}, h.token, 400},
		{"64 MiB raw from a small body", path, mod(func(hd http.Header) { hd.Set(protocol.HeaderRawBytes, strconv.Itoa(64<<20)) }), good.Data, h.token, 400},
		{"gap past the edge's end", path, func() http.Header {
			hd := http.Header{}
			hd.Set(protocol.HeaderBase, "0")
			hd.Set(protocol.HeaderNext, "1000000000000")
			hd.Set(protocol.HeaderGapFrom, "0")
			hd.Set(protocol.HeaderGapTo, "1000000000000")
			hd.Set(protocol.HeaderGapReason, storage.GapQuotaDropped)
			hd.Set(protocol.HeaderEdgeEnd, "300")
			return hd
		}(), nil, h.token, 400},
		{"gap without the edge's end", path, func() http.Header {
			hd := http.Header{}
			hd.Set(protocol.HeaderBase, "0")
			hd.Set(protocol.HeaderNext, "10")
			hd.Set(protocol.HeaderGapFrom, "0")
			hd.Set(protocol.HeaderGapTo, "10")
			hd.Set(protocol.HeaderGapReason, storage.GapQuotaDropped)
			return hd
		}(), nil, h.token, 400},
		{"gap with body", path, mod(func(hd http.Header) {
			hd.Set(protocol.HeaderGapFrom, "0")
			hd.Set(protocol.HeaderGapTo, "5")
			hd.Set(protocol.HeaderGapReason, "x")
		}), good.Data, h.token, 400},
	}
	for _, tc := range cases {
		code, e, _ := h.post(tc.path, tc.hdr, tc.body, tc.token)
		if code != tc.code || e.Error == "" {
			t.Errorf("%s: got %d %q, want %d with a reason", tc.name, code, e.Error, tc.code)
		}
		if tc.code == 409 && (e.Position == nil || e.Position.Next != 0) {
			t.Errorf("%s: 409 without the expected position: %+v", tc.name, e.Position)
		}
		if n := h.stored(); n != 0 {
			t.Fatalf("%s: %d records stored after a bad request", tc.name, n)
		}
	}
	// A body that ends before its Content-Length, over a raw socket.
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: gw-1\r\n", path, h.token, protocol.HeaderEdge)
	chunkHeaders(good).Write(conn)
	fmt.Fprintf(conn, "Content-Length: %d\r\n\r\n", len(good.Data))
	conn.Write(good.Data[:len(good.Data)/3])
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(conn)
	conn.Close()
	if n := h.stored(); n != 0 {
		t.Fatalf("truncated body: %d records stored", n)
	}

	var next int64
	for i, c := range chunks {
		code, e, p := h.post(path, chunkHeaders(c), c.Data, h.token)
		if code != 200 || p.Next != c.Next {
			t.Fatalf("chunk %d: %d %q next %d, want 200 next %d", i, code, e.Error, p.Next, c.Next)
		}
		next = p.Next
	}
	code, _, p := h.post(path, chunkHeaders(good), good.Data, h.token)
	if code != 200 || p.Next != next || h.stored() != 300 {
		t.Fatalf("repeat: %d next %d stored %d, want 200 next %d stored 300", code, p.Next, h.stored(), next)
	}
	// Revocation applies at once.
	if err := h.rcv.RevokeEdge("gw-1"); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := h.post(path, chunkHeaders(good), good.Data, h.token); code != 401 {
		t.Fatalf("revoked edge: got %d, want 401", code)
	}
}

// TestGapAndRestart stores a gap marker, checkpoints, reopens and checks the lane resumes from
// the committed offset with its gap listed.
func TestGapAndRestart(t *testing.T) {
	dir := t.TempDir()
	log, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := New(Config{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	token, _ := rcv.AddEdge("gw-1")
	srv := httptest.NewServer(rcv)
	h := &harness{t: t, log: log, rcv: rcv, srv: srv, token: token}
	chunks := edgeChunks(t, 50, 1<<20)
	path := protocol.SyncPath("readings", 0)
	gh := http.Header{}
	gh.Set(protocol.HeaderBase, "0")
	gh.Set(protocol.HeaderNext, "1000")
	gh.Set(protocol.HeaderGapFrom, "0")
	gh.Set(protocol.HeaderGapTo, "1000")
	gh.Set(protocol.HeaderGapReason, storage.GapQuotaDropped)
	gh.Set(protocol.HeaderEdgeEnd, "1050")
	if code, e, p := h.post(path, gh, nil, token); code != 200 || p.Next != 1000 {
		t.Fatalf("gap: %d %q %+v", code, e.Error, p)
	}
	// Records the edge renumbered past the gap: shift the chunk by rebuilding it is not possible,
	// so check the lane refuses offset 0 now (repeat) and the gap is listed.
	if code, _, p := h.post(path, chunkHeaders(chunks[0]), chunks[0].Data, token); code != 200 || p.Next != 1000 {
		t.Fatalf("chunk below the gap: %d %+v, want a 200 repeat", code, p)
	}
	if err := rcv.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	log.Close()

	log, err = storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	rcv, err = New(Config{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	lanes := rcv.Lanes()
	if len(lanes) != 1 || lanes[0].Next != 1000 || lanes[0].Committed != 1000 || lanes[0].GapsRecords != 1000 {
		t.Fatalf("after restart: %+v", lanes)
	}
}
