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

// dedupe remembers, per MQTT client id, the last readings stored with a packet id, to recognise a
// resend of a reading the edge stored but whose ack may not have reached the client. A client
// resends only PUBLISHes it has not seen acknowledged, and it has at most MaxPendingPerClient of
// those stored-but-unacked at a time, so a ring of twice that per client covers every resend.
//
// What counts as a resend is decided per publish by [dedupeRing.resendOf]: the packet id and the
// hash of topic and payload must match the newest reading stored under that packet id, and either
// the DUP flag is set or that reading came in on an earlier connection (or before a restart) of the
// client. Many clients (MQTT.js, paho-mqtt for Python in some reconnect paths) resend without DUP,
// so the flag alone is not enough.
type dedupe struct {
	perClient int
	maxIdle   int

	mu      sync.Mutex
	clients map[string]*dedupeRing
}

// dedupeRing is one client's memory: its last size readings with a packet id, oldest overwritten
// first, and an index from packet id to the newest of them. Its memory is bounded by size (at most
// 65,535: there are no more packet ids) and grows with use, so a client that sent a few readings
// costs a few entries.
type dedupeRing struct {
	mu      sync.Mutex
	entries []dedupeEntry
	next    int // once full: the slot the next add overwrites, the oldest
	size    int
	index   packetIndex
	// unreleased counts the newest entries whose result objects release has not let go of yet.
	unreleased int
	sessions   uint32 // connections attached so far; each gets the next number as its generation
	connected  int    // sessions holding the ring; idle rings are evicted first
}

type dedupeEntry struct {
	packetID uint16
	// gen is the connection that last sent this reading: a session's generation, or
	// restoredGen for readings found in the log at start.
	gen  uint32
	hash uint64
	res  *result
}

// Generations that are not a connection: restoredGen marks readings rebuilt from the log tail,
// sent on a connection before this process started, so any connection may resend them;
// deliveredGen marks readings that were durable when the client ended their connection with
// DISCONNECT: their acks had gone out or were due, and a client that disconnects on purpose waits
// for its acks first (mosquitto_pub, MQTT.js end()) or resends later with DUP (paho), so reusing
// their packet ids without DUP is new readings (mosquitto_pub run again with the same message).
// Sessions count from firstSessionGen.
const (
	restoredGen     = 0
	deliveredGen    = 1
	firstSessionGen = 2
)

// maxRingSize is the most entries a ring holds: the index stores slots in 16 bits, and a client
// has no more than 65,535 packet ids in use.
const maxRingSize = 65535

func newDedupe(perClient int) *dedupe {
	return &dedupe{perClient: min(perClient, maxRingSize), maxIdle: 100_000, clients: map[string]*dedupeRing{}}
}

// ring returns the ring of a client id, creating it.
func (d *dedupe) ring(clientID string) *dedupeRing {
	r, _ := d.get(clientID, false)
	return r
}

// attach returns the ring of a client id for a new connection, and that connection's generation.
func (d *dedupe) attach(clientID string) (*dedupeRing, uint32) {
	return d.get(clientID, true)
}

func (d *dedupe) get(clientID string, attach bool) (*dedupeRing, uint32) {
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
	if !attach {
		return r, restoredGen
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected++
	r.sessions++
	if r.sessions < firstSessionGen {
		r.sessions = firstSessionGen // the first connection, or after 2^32 of them
	}
	return r, r.sessions
}

// delivered marks the durable readings of connection gen as acknowledged to the client: it ended
// the connection with DISCONNECT. A reading still in its group commit keeps its generation, since
// its ack cannot have gone out.
func (r *dedupeRing) delivered(gen uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.entries {
		e := &r.entries[i]
		if e.gen != gen {
			continue
		}
		if e.res == storedResult {
			e.gen = deliveredGen
		} else if done, err := e.res.outcome(); done && err == nil {
			e.gen = deliveredGen
		}
	}
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

// add remembers a reading stored (or being stored) with packetID, received on connection gen.
func (r *dedupeRing) add(packetID uint16, hash uint64, gen uint32, res *result) {
	r.mu.Lock()
	e := dedupeEntry{packetID: packetID, gen: gen, hash: hash, res: res}
	var at int
	if len(r.entries) < r.size {
		at = len(r.entries)
		r.entries = append(r.entries, e)
		r.index.grow(r.entries)
	} else {
		at = r.next
		old := r.entries[at]
		r.index.remove(old.packetID, at)
		r.entries[at] = e
		r.next = (r.next + 1) % r.size
	}
	r.index.put(packetID, at)
	r.release(at)
	r.mu.Unlock()
}

// release lets go of the result objects of the entries that completed, oldest first, up to the
// first one still in its group commit; newest is the slot just added. Lookup only needs to know
// that a reading was stored, and rings that kept every result until it was overwritten (or half
// a ring later) grew with how long a fleet ran: up to 22 KiB per client id at 512 entries, most
// of the edge's memory in a soak. Each entry is looked at once after it completes, so an add
// costs O(1) amortised, and a ring holds about as many results as its client has in flight.
// A failed result is kept: lookup must see the failure.
func (r *dedupeRing) release(newest int) {
	r.unreleased = min(r.unreleased+1, len(r.entries))
	for r.unreleased > 0 {
		e := &r.entries[(newest-r.unreleased+1+len(r.entries))%len(r.entries)]
		if e.res != storedResult {
			done, err := e.res.outcome()
			if !done {
				return
			}
			if err == nil {
				e.res = storedResult
			}
		}
		r.unreleased--
	}
}

// resendOf returns the result of the stored reading that a publish with packetID and hash, on
// connection gen, resends; nil when the publish is a new reading. Only the newest reading stored
// under packetID is considered: a client reuses a packet id only once the previous use was acked,
// so an older one cannot be resent. It is a resend when the hashes match, that reading did not
// fail to store, and
//   - the publish has the DUP flag, or
//   - the reading came in on another connection or before a restart: its ack may have been lost
//     with that connection, and a client resends after reconnecting (MQTT.js without DUP); not
//     when the client ended that connection with DISCONNECT after the reading was durable, or
//   - the reading came in on this connection and is not durable yet, so its ack cannot have been
//     sent: the client cannot be reusing the id for a new reading.
//
// A publish on the same connection that reuses the id of a reading already durable is a new
// reading: the client saw the ack (acks go out in order on one TCP connection) and reused the id,
// possibly for an identical payload. A recognised resend moves the reading to this connection, so
// a later reuse of its packet id here is new again.
func (r *dedupeRing) resendOf(packetID uint16, hash uint64, gen uint32, dup bool) *result {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.index.get(packetID)
	if !ok {
		return nil
	}
	e := &r.entries[at]
	if e.hash != hash {
		return nil
	}
	done, err := e.res.outcome()
	if done && err != nil {
		return nil
	}
	if !dup && done && (e.gen == gen || e.gen == deliveredGen) {
		return nil
	}
	e.gen = gen
	return e.res
}

// rebuild reads the last window records of every partition and remembers the readings stored with
// a packet id, so a resend after a crash or restart is acked without storing it twice.
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
		r := d.ring(cid)
		for _, s := range readings[max(len(readings)-r.size, 0):] {
			r.add(s.packetID, s.hash, restoredGen, storedResult)
		}
	}
	return n, nil
}
