package receive

import (
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// TestApplyRule has one case per branch of doc.go's apply rule, each on a fresh receiver and
// lane, sent over real HTTP.
func TestApplyRule(t *testing.T) {
	path := protocol.SyncPath("readings", 0)
	chunks := edgeChunks(t, 300, 4<<10)
	if len(chunks) < 3 {
		t.Fatalf("want several chunks, got %d", len(chunks))
	}
	c0, c1 := chunks[0], chunks[1]
	type answer struct {
		code int
		next int64
	}
	send := func(h *harness, c storage.Chunk) answer {
		code, e, p := h.post(path, chunkHeaders(c), c.Data, h.token)
		if e.Position != nil {
			p = *e.Position
		}
		return answer{code, p.Next}
	}
	both := func(h *harness, a, b storage.Chunk, gap time.Duration) (answer, answer) {
		var wg sync.WaitGroup
		var ra, rb answer
		wg.Add(2)
		go func() { defer wg.Done(); ra = send(h, a) }()
		go func() { defer wg.Done(); time.Sleep(gap); rb = send(h, b) }()
		wg.Wait()
		return ra, rb
	}
	cases := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"repeat: next <= expected is acknowledged, nothing applied", func(t *testing.T, h *harness) {
			if a := send(h, c0); a != (answer{200, c0.Next}) {
				t.Fatalf("first send: %+v", a)
			}
			if a := send(h, c0); a != (answer{200, c0.Next}) || h.stored() != int64(c0.Records) {
				t.Fatalf("repeat: %+v with %d stored, want 200 at %d with %d stored", a, h.stored(), c0.Next, c0.Records)
			}
		}},
		{"resend while queued: answered once expected reaches next, stored once", func(t *testing.T, h *harness) {
			// The second send arrives while the first may still be queued (not yet durable);
			// either way both are answered with the chunk's next and its records stored once.
			a, b := both(h, c0, c0, 0)
			if a != (answer{200, c0.Next}) || b != (answer{200, c0.Next}) || h.stored() != int64(c0.Records) {
				t.Fatalf("answers %+v %+v with %d stored, want both 200 at %d and %d stored", a, b, h.stored(), c0.Next, c0.Records)
			}
		}},
		{"reorder within the wait: the later chunk waits for its predecessor", func(t *testing.T, h *harness) {
			h.rcv.cfg.ReorderWait = 5 * time.Second // wide enough for a loaded machine; set before any request
			later, first := both(h, c1, c0, 20*time.Millisecond)
			// Each answer is the lane's position when it was written: at or past the chunk's next.
			if first.code != 200 || first.next < c0.Next || later != (answer{200, c1.Next}) || h.stored() != int64(c0.Records+c1.Records) {
				t.Fatalf("answers %+v (later) %+v (first) with %d stored, want 200s at %d and %d", later, first, h.stored(), c1.Next, c0.Next)
			}
		}},
		{"reorder beyond the wait: 409 with the expected offset", func(t *testing.T, h *harness) {
			start := time.Now()
			if a := send(h, c1); a != (answer{409, 0}) || h.stored() != 0 {
				t.Fatalf("chunk without its predecessor: %+v with %d stored, want 409 at 0 and nothing stored", a, h.stored())
			}
			if took := time.Since(start); took < 50*time.Millisecond {
				t.Fatalf("409 after %v, before the 50ms reorder wait", took)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newHarness(t)) })
	}

	// A failed apply and its reset: central's quota refuses the chunk (503), expected stays, and
	// the queued state is reset to the durable one, so a resend is applied afresh (refused again,
	// at once) instead of waiting for an apply that will never become durable.
	t.Run("failed apply and its reset", func(t *testing.T) {
		log, err := storage.Open(t.TempDir(), &storage.Options{QuotaBytes: 1})
		if err != nil {
			t.Fatal(err)
		}
		rcv, err := New(Config{Log: log, ReorderWait: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		token, err := rcv.AddEdge("gw-1")
		if err != nil {
			t.Fatal(err)
		}
		h := &harness{t: t, log: log, rcv: rcv, srv: httptest.NewServer(rcv), token: token}
		t.Cleanup(func() { h.srv.Close(); log.Close() })
		// Chunks apply until the quota (checked as the log grows) refuses one; records queued
		// before the refusal may be stored (a prefix per central partition). The resend of the
		// refused chunk is refused again at once, skips what is stored and stores nothing twice.
		more := edgeChunks(t, 3000, 4<<10)
		var refused, expected int64 = -1, 0
		for i, c := range more {
			a := send(h, c)
			if a.code == 503 {
				refused = int64(i)
				break
			}
			if a != (answer{200, c.Next}) {
				t.Fatalf("chunk %d: %+v", i, a)
			}
			expected = c.Next
		}
		if refused < 0 {
			t.Fatalf("a quota of 1 byte never refused a chunk in %d", len(more))
		}
		stored := h.stored()
		c := more[refused]
		start := time.Now()
		if a := send(h, c); a != (answer{503, expected}) || h.stored() != stored || stored >= c.Next {
			t.Fatalf("resend of the refused chunk [%d, %d): %+v with %d stored (%d before), want 503 at %d and nothing stored twice",
				c.Base, c.Next, a, h.stored(), stored, expected)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("resend answered after %v", took)
		}
		if lanes := rcv.Lanes(); len(lanes) != 1 || lanes[0].Next != expected {
			t.Fatalf("lanes after the failed applies: %+v, want one at %d", lanes, expected)
		}
	})
}
