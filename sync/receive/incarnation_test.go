package receive

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

func withIncarnation(h http.Header, inc string, base int64) http.Header {
	if inc != "" {
		h.Set(protocol.HeaderIncarnation, inc)
	}
	if base > 0 {
		h.Set(protocol.HeaderIncarnationBase, strconv.FormatInt(base, 10))
	}
	return h
}

// TestIncarnationEpochs: a new edge log under an old edge id starts a new epoch whose records
// are not taken for repeats, through a central restart before any checkpoint; the replaced log
// is refused with 410, a request without an incarnation on such a lane with 400, and a lane an
// older edge fed is adopted where it is.
func TestIncarnationEpochs(t *testing.T) {
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
	chunks := edgeChunks(t, 200, 2<<10)
	path := protocol.SyncPath("readings", 0)
	legacy := protocol.SyncPath("readings", 1)
	send := func(path, inc string, base int64, c storage.Chunk, want int) protocol.Position {
		t.Helper()
		code, e, p := h.post(path, withIncarnation(chunkHeaders(c), inc, base), c.Data, token)
		if code != want {
			t.Fatalf("chunk [%d, %d) as %q: %d %q, want %d", c.Base, c.Next, inc, code, e.Error, want)
		}
		return p
	}
	for _, c := range chunks {
		send(path, "old-log", 0, c, 200)
		send(legacy, "", 0, c, 200) // an edge older than incarnations
	}
	all := int64(2 * 200)
	if h.stored() != all {
		t.Fatalf("stored %d, want %d", h.stored(), all)
	}
	send(path, "", 0, chunks[0], 400) // a lane with an incarnation needs one
	// The data dir was wiped: the new log's offsets start at 0 again and are new readings.
	if p := send(path, "new-log", 0, chunks[0], 200); p.Next != chunks[0].Next {
		t.Fatalf("new epoch: next %d, want %d", p.Next, chunks[0].Next)
	}
	if h.stored() != all+int64(chunks[0].Records) {
		t.Fatalf("the new log's first chunk was taken for a repeat: stored %d", h.stored())
	}
	send(path, "old-log", 0, chunks[1], 410) // the replaced log, still running somewhere
	// An older edge's lane is adopted by the first incarnation, where it is.
	if p := send(legacy, "adopter", 0, chunks[len(chunks)-1], 200); p.Next != chunks[len(chunks)-1].Next {
		t.Fatalf("adopted lane: next %d", p.Next)
	}
	lanes := rcv.Lanes()
	if lanes[0].Epoch != 2 || lanes[0].Incarnation != "new-log" || lanes[1].Epoch != 1 || lanes[1].Incarnation != "adopter" {
		t.Fatalf("lanes %+v", lanes)
	}

	// Central dies before a checkpoint covers the new epoch: the restart must still know it.
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
	h.log, h.rcv, h.srv = log, rcv, httptest.NewServer(rcv)
	defer h.srv.Close()
	stored := h.stored()
	send(path, "new-log", 0, chunks[0], 200) // a resend: a repeat now
	send(path, "new-log", 0, chunks[1], 200)
	send(legacy, "adopter", 0, chunks[0], 200) // records stored before the adoption are its own
	if h.stored() != stored+int64(chunks[1].Records) {
		t.Fatalf("after restart stored %d, want %d", h.stored(), stored+int64(chunks[1].Records))
	}
	send(path, "old-log", 0, chunks[2], 410)
	// A log that went back keeps its prefix: a third incarnation from offset chunks[1].Base on.
	p := send(path, "went-back", chunks[1].Base, chunks[1], 200)
	if p.Next != chunks[1].Next || h.stored() != stored+2*int64(chunks[1].Records) {
		t.Fatalf("went back: next %d stored %d", p.Next, h.stored())
	}
	lanes = rcv.Lanes()
	if lanes[0].Epoch != 3 || lanes[0].Incarnation != "went-back" {
		t.Fatalf("lanes after restart %+v", lanes)
	}
}

// TestEdgeWritesOnlyItsOwnLanes: an edge's token names its lanes; it cannot write (or read the
// position of) another edge's, whatever edge id it puts in the header.
func TestEdgeWritesOnlyItsOwnLanes(t *testing.T) {
	h := newHarness(t)
	other, err := h.rcv.AddEdge("gw-2")
	if err != nil {
		t.Fatal(err)
	}
	c := edgeChunks(t, 10, 1<<20)[0]
	for _, tc := range []struct{ header, token string }{{"gw-2", h.token}, {"gw-1", other}} {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+protocol.SyncPath("readings", 0), bytes.NewReader(c.Data))
		for k, v := range chunkHeaders(c) {
			req.Header[k] = v
		}
		req.Header.Set(protocol.HeaderEdge, tc.header)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
			t.Fatalf("edge header %s with another edge's token: %d close=%v, want 401 and a close", tc.header, resp.StatusCode, resp.Close)
		}
	}
	if n := h.stored(); n != 0 || len(h.rcv.Lanes()) != 0 {
		t.Fatalf("%d records stored, lanes %+v", n, h.rcv.Lanes())
	}
}
