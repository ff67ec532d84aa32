package edge

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/tributary-iot/tributary/storage"
)

// Record headers written with every reading. client-id, packet-id and payload-hash let a restarted
// agent recognise a DUP resend of a reading it stored but never acknowledged.
const (
	HeaderTopic       = "topic"
	HeaderContentType = "content-type"
	HeaderDeviceTime  = "device-time"  // unix milliseconds, from the payload's ts/time field
	HeaderReceiveTime = "receive-time" // unix milliseconds, gateway clock
	HeaderClientID    = "client-id"
	HeaderPacketID    = "packet-id" // decimal; absent for QoS 0
	HeaderPayloadHash = "payload-hash"
	HeaderDevice      = "device"       // dead letters: the authenticated device, or the client id
	HeaderReason      = "reason"       // dead letters: a devices.Reason
	HeaderPayloadSize = "payload-size" // dead letters: original size when the payload was cut
	HeaderSource      = "source"       // "mqtt" or the external broker URL
)

// payloadHash identifies a publish for dedupe: FNV-1a 64 over topic, a zero byte and payload.
// It needs no secrecy, only to tell a resend of the same reading from a new reading that reuses
// the packet id, and it is stable across restarts (unlike maphash).
// It runs on every QoS 1/2 publish, so it is FNV-1a written out: hash/fnv's Hash64 escapes to the
// heap and copies the topic to bytes.
func payloadHash(topic string, payload []byte) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for i := 0; i < len(topic); i++ {
		h = (h ^ uint64(topic[i])) * prime64
	}
	h *= prime64 // the zero byte between topic and payload
	for _, c := range payload {
		h = (h ^ uint64(c)) * prime64
	}
	return h
}

func appendHash(dst []byte, h uint64) []byte {
	var b [8]byte
	for i := range b {
		b[i] = byte(h >> (56 - 8*i))
	}
	return hex.AppendEncode(dst, b[:])
}

func parseHash(s []byte) (uint64, bool) {
	var b [8]byte
	if len(s) != 16 {
		return 0, false
	}
	if _, err := hex.Decode(b[:], s); err != nil {
		return 0, false
	}
	var h uint64
	for _, c := range b {
		h = h<<8 | uint64(c)
	}
	return h, true
}

// dedupe remembers, per MQTT client id, the last readings stored with a packet id. A client
// resends only PUBLISHes it has not seen acknowledged, and it has at most MaxPendingPerClient of
// those stored-but-unacked at a time, so a ring of twice that per client covers every resend.
type dedupe struct {
	perClient int
	maxIdle   int

	mu      sync.Mutex
	clients map[string]*dedupeRing
}

type dedupeRing struct {
	mu        sync.Mutex
	entries   []dedupeEntry
	next      int
	size      int
	connected int // sessions holding the ring; idle rings are evicted first
}

type dedupeEntry struct {
	packetID uint16
	hash     uint64
	res      *result
}

func newDedupe(perClient int) *dedupe {
	return &dedupe{perClient: perClient, maxIdle: 100_000, clients: map[string]*dedupeRing{}}
}

// ring returns the ring of a client id, creating it. attach counts a connected session.
func (d *dedupe) ring(clientID string, attach bool) *dedupeRing {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.clients[clientID]
	if r == nil {
		if len(d.clients) >= d.maxIdle {
			d.evictIdleLocked()
		}
		r = &dedupeRing{size: d.perClient}
		d.clients[clientID] = r
	}
	if attach {
		r.mu.Lock()
		r.connected++
		r.mu.Unlock()
	}
	return r
}

func (d *dedupe) detach(r *dedupeRing) {
	r.mu.Lock()
	r.connected--
	r.mu.Unlock()
}

// evictIdleLocked forgets half of the clients that are not connected: a fleet of clean-session
// clients with random ids must not grow this map forever.
func (d *dedupe) evictIdleLocked() {
	target := len(d.clients) / 2
	for id, r := range d.clients {
		if len(d.clients) <= target {
			return
		}
		r.mu.Lock()
		idle := r.connected == 0
		r.mu.Unlock()
		if idle {
			delete(d.clients, id)
		}
	}
}

func (r *dedupeRing) add(packetID uint16, hash uint64, res *result) {
	r.mu.Lock()
	var at int
	if len(r.entries) < r.size {
		at = len(r.entries)
		r.entries = append(r.entries, dedupeEntry{packetID, hash, res})
	} else {
		at = r.next
		r.entries[r.next] = dedupeEntry{packetID, hash, res}
		r.next = (r.next + 1) % r.size
	}
	// Let go of the result of an entry half a ring older once it succeeded: lookup only needs to
	// know it was stored, and a thousand clients' rings of pending-result objects were most of
	// the edge's memory in the soak run. One entry per add keeps this O(1).
	if old := at - len(r.entries)/2; old >= 0 || len(r.entries) == r.size {
		old = (old + len(r.entries)) % len(r.entries)
		if e := &r.entries[old]; e.res != storedResult {
			if done, err := e.res.outcome(); done && err == nil {
				e.res = storedResult
			}
		}
	}
	r.mu.Unlock()
}

// lookup returns the result of the newest stored reading with packetID, if its hash matches and it
// did not fail. A newer reading with the same packet id but another payload means the id was
// reused after an ack, so the resend is a new reading.
func (r *dedupeRing) lookup(packetID uint16, hash uint64) *result {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.entries)
	for i := range n {
		// Newest first: the slot before next, going back.
		idx := r.next - 1 - i
		if len(r.entries) < r.size {
			idx = n - 1 - i
		}
		for idx < 0 {
			idx += n
		}
		e := r.entries[idx]
		if e.packetID != packetID {
			continue
		}
		if e.hash != hash {
			return nil
		}
		if done, err := e.res.outcome(); done && err != nil {
			return nil
		}
		return e.res
	}
	return nil
}

// rebuild reads the last window records of every partition and remembers the readings stored with
// a packet id, so a DUP resend after a crash or restart is acked without storing it twice.
//
// One client's readings spread over partitions (a bridge publishes for many device keys), so each
// client's readings are put back in the order they were received before they fill its ring: the
// ring keeps the newest and lookup trusts the newest entry with a packet id, which after a reuse
// of the id is the only one that can be resent. Receive times have millisecond precision; within
// one partition, offset order breaks ties.
func (d *dedupe) rebuild(ctx context.Context, log *storage.Log, window int) (int, error) {
	type tailReading struct {
		received int64 // unix ms
		packetID uint16
		hash     uint64
	}
	byClient := map[string][]tailReading{}
	n := 0
	for _, s := range log.Streams() {
		for i := range s.Partitions() {
			p := s.Partition(i)
			from := max(p.EndOffset()-int64(window), p.StartOffset())
			rd := p.NewReader(from, nil)
			for {
				e, err := rd.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return n, err
				}
				if e.Gap != nil {
					continue
				}
				cid := e.HeaderValue(HeaderClientID)
				pid := e.HeaderValue(HeaderPacketID)
				hv := e.HeaderValue(HeaderPayloadHash)
				if cid == nil || pid == nil || hv == nil {
					continue
				}
				id, err := strconv.ParseUint(string(pid), 10, 16)
				if err != nil {
					continue
				}
				h, ok := parseHash(hv)
				if !ok {
					continue
				}
				byClient[string(cid)] = append(byClient[string(cid)], tailReading{e.Timestamp.UnixMilli(), uint16(id), h})
				n++
			}
		}
	}
	for cid, readings := range byClient {
		slices.SortStableFunc(readings, func(a, b tailReading) int { return cmp.Compare(a.received, b.received) })
		r := d.ring(cid, false)
		for _, s := range readings[max(len(readings)-r.size, 0):] {
			r.add(s.packetID, s.hash, storedResult)
		}
	}
	return n, nil
}
