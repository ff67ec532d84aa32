package protocol

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// ChunkMeta is what a POST on a lane says about its body, in the Header constants: the offsets
// the chunk spans and either the data body's size and checksum or, for a gap chunk (empty body),
// the gap. The forwarder encodes it from a storage.Chunk; the receiver parses it before reading
// anything else of the request.
type ChunkMeta struct {
	Base, Next int64 // the chunk covers offsets [Base, Next)

	// A data chunk: its records, the raw batch bytes inside the zstd body, the body's CRC32-C,
	// and whether the body is a sealed segment's stored frame.
	Records  int64
	RawBytes int64
	CRC      uint32
	Sealed   bool

	// Gap, when set, makes this a gap chunk: offsets the edge lost, with From == Base and
	// To == Next. Gap.Time travels in unix milliseconds; a zero Time is not sent.
	Gap *storage.Gap
}

// MaxGapReason is the longest gap reason a chunk may carry, in bytes.
const MaxGapReason = 200

// NewChunkMeta describes a storage chunk for the wire.
func NewChunkMeta(ch storage.Chunk) ChunkMeta {
	m := ChunkMeta{Base: ch.Base, Next: ch.Next, Gap: ch.Gap}
	if ch.Gap == nil {
		m.Records, m.RawBytes, m.CRC, m.Sealed = int64(ch.Records), int64(ch.RawBytes), ChunkCRC(ch.Data), ch.Sealed
	}
	return m
}

// Encode sets m's headers on h.
func (m ChunkMeta) Encode(h http.Header) {
	h.Set(HeaderBase, strconv.FormatInt(m.Base, 10))
	h.Set(HeaderNext, strconv.FormatInt(m.Next, 10))
	if m.Gap != nil {
		h.Set(HeaderGapFrom, strconv.FormatInt(m.Gap.From, 10))
		h.Set(HeaderGapTo, strconv.FormatInt(m.Gap.To, 10))
		h.Set(HeaderGapReason, m.Gap.Reason)
		if !m.Gap.Time.IsZero() {
			h.Set(HeaderGapTime, strconv.FormatInt(m.Gap.Time.UnixMilli(), 10))
		}
		return
	}
	h.Set("Content-Type", "application/zstd")
	h.Set(HeaderRecords, strconv.FormatInt(m.Records, 10))
	h.Set(HeaderRawBytes, strconv.FormatInt(m.RawBytes, 10))
	h.Set(HeaderCRC, strconv.FormatUint(uint64(m.CRC), 10))
	if m.Sealed {
		h.Set(HeaderSealed, "1")
	}
}

// ParseChunkMeta reads and checks a chunk's headers: every number present and decimal, a
// non-empty range, a gap equal to the range with a reason of 1..MaxGapReason bytes, a record
// count equal to the range. What needs the body or the receiver's limits (the checksum, the raw
// size bound, the edge's end for a gap) is the receiver's to check.
func ParseChunkMeta(h http.Header) (ChunkMeta, error) {
	var m ChunkMeta
	var err error
	if m.Base, err = Int64Header(h, HeaderBase); err != nil {
		return ChunkMeta{}, err
	}
	if m.Next, err = Int64Header(h, HeaderNext); err != nil {
		return ChunkMeta{}, err
	}
	if m.Base < 0 || m.Next <= m.Base {
		return ChunkMeta{}, fmt.Errorf("chunk range [%d, %d) is empty or negative", m.Base, m.Next)
	}
	if h.Get(HeaderGapFrom) != "" {
		from, err := Int64Header(h, HeaderGapFrom)
		if err != nil {
			return ChunkMeta{}, err
		}
		to, err := Int64Header(h, HeaderGapTo)
		if err != nil {
			return ChunkMeta{}, err
		}
		if from != m.Base || to != m.Next {
			return ChunkMeta{}, fmt.Errorf("gap chunk must have an empty body and gap [%d, %d) equal to the chunk range [%d, %d)", from, to, m.Base, m.Next)
		}
		g := storage.Gap{From: from, To: to, Records: to - from, Reason: h.Get(HeaderGapReason)}
		if ms, err := Int64Header(h, HeaderGapTime); err == nil {
			g.Time = time.UnixMilli(ms).UTC()
		}
		if g.Reason == "" || len(g.Reason) > MaxGapReason {
			return ChunkMeta{}, errors.New("gap chunk needs a reason of at most 200 bytes")
		}
		m.Gap = &g
		return m, nil
	}
	if m.Records, err = Int64Header(h, HeaderRecords); err != nil {
		return ChunkMeta{}, err
	}
	if m.RawBytes, err = Int64Header(h, HeaderRawBytes); err != nil {
		return ChunkMeta{}, err
	}
	crc, err := Int64Header(h, HeaderCRC)
	if err != nil {
		return ChunkMeta{}, err
	}
	if crc < 0 || crc > math.MaxUint32 {
		return ChunkMeta{}, fmt.Errorf("header %s: %d is not a CRC32-C", HeaderCRC, crc)
	}
	m.CRC = uint32(crc)
	m.Sealed = h.Get(HeaderSealed) == "1"
	if m.Records != m.Next-m.Base {
		return ChunkMeta{}, fmt.Errorf("chunk says %d records but spans [%d, %d)", m.Records, m.Base, m.Next)
	}
	return m, nil
}
