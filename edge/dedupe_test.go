package edge

import (
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// A bridge's readings spread over partitions. After a restart its dedupe memory must hold its
// newest readings in the order received, not partition by partition: here the newest reading sits
// in partition 0, which the rebuild reads first, and older readings of the other partitions
// reuse its packet id with other payloads. Its DUP resend must be acked without storing it twice.
func TestDupRebuildKeepsNewestAcrossPartitions(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, AnonymousPublish: "any", MaxPendingPerClient: 4, DefaultPartitions: 8}
	var last string
	var others []string
	for i := 0; len(others) < 7 || last == ""; i++ {
		key := fmt.Sprintf("sensor-%d", i)
		if storage.PartitionFor([]byte(key), 8) == 0 {
			if last == "" {
				last = key
			}
		} else if len(others) < 7 {
			others = append(others, key)
		}
	}
	topic := func(key string) string { return "devices/" + key + "/readings" }
	payload := func(i int) []byte { return fmt.Appendf(nil, `{"seq":%d}`, i) }
	id := func(i int) uint16 { return uint16(i%5 + 1) } // ids are reused once acked, as clients do

	a, stop := startAgent(t, cfg)
	c, _ := dialRaw(t, a.MQTTAddr(), "bridge", 4, "", "")
	const n = 30 // more than the ring's 2 x MaxPendingPerClient
	for i := range n - 1 {
		c.publish(topic(others[i%len(others)]), payload(i), id(i), 1, false)
		c.expectAck(id(i))
	}
	time.Sleep(2 * time.Millisecond) // the newest reading gets a receive time of its own
	c.publish(topic(last), payload(n-1), id(n-1), 1, false)
	c.expectAck(id(n - 1)) // the ack the client "lost"
	stop()

	a, _ = startAgent(t, cfg)
	c, _ = dialRaw(t, a.MQTTAddr(), "bridge", 4, "", "")
	c.publish(topic(last), payload(n-1), id(n-1), 1, true)
	c.expectAck(id(n - 1))
	if got := countStream(t, a.Log(), "readings"); got != n {
		t.Fatalf("%d records after the DUP resend across a restart, want %d", got, n)
	}
}

// TestRingReleasesCompletedResults: an entry drops its result object once it succeeded and a
// later add comes by, oldest first and no further than the first pending one; released entries
// still answer lookups, and a failed or pending result is kept.
func TestRingReleasesCompletedResults(t *testing.T) {
	r := &dedupeRing{size: 8}
	results := make([]*result, 12)
	for i := range results {
		results[i] = &result{}
	}
	results[3].complete(errDraining) // failed: kept, lookup must see it
	add := func(i int) { r.add(uint16(i+1), uint64(100+i), 1, results[i]) }
	for i := range 6 {
		if i != 1 && i != 3 {
			results[i].complete(nil)
		}
		add(i)
	}
	held := func() (n int) {
		for _, e := range r.entries {
			if e.res != storedResult {
				n++
			}
		}
		return n
	}
	// Reading 1 is pending: only reading 0, before it, was let go of.
	if r.entries[0].res != storedResult {
		t.Fatal("completed reading 0 kept its result")
	}
	if got := held(); got != 5 {
		t.Fatalf("%d results held with reading 1 pending, want 5 (readings 1 to 5)", got)
	}
	results[1].complete(nil)
	for i := 6; i < 12; i++ { // wraps the ring of 8
		results[i].complete(nil)
		add(i)
	}
	if got := held(); got != 0 {
		t.Fatalf("%d results held after every reading completed and the ring wrapped, want 0", got)
	}
	r.add(13, 999, 1, &result{}) // a pending reading keeps its result until it completes
	if got := held(); got != 1 {
		t.Fatalf("%d results held with the newest pending, want 1", got)
	}
	for i := 5; i < 12; i++ { // reading 4's slot went to the pending one
		if got := r.resendOf(uint16(i+1), uint64(100+i), 1, true); got == nil {
			t.Fatalf("lookup of stored reading %d after release: nil", i+1)
		}
	}
}

// The hash is stored with every reading and read back after a restart: it must stay FNV-1a 64
// over topic, a zero byte and payload.
func TestPayloadHashIsFNV1a(t *testing.T) {
	for _, c := range []struct{ topic, payload string }{{"", ""}, {"devices/d1/readings", `{"seq":1}`}, {"t", "\x00\xff"}} {
		h := fnv.New64a()
		h.Write([]byte(c.topic))
		h.Write([]byte{0})
		h.Write([]byte(c.payload))
		if got, want := payloadHash(c.topic, []byte(c.payload)), h.Sum64(); got != want {
			t.Errorf("payloadHash(%q, %q) = %x, want %x", c.topic, c.payload, got, want)
		}
	}
}
