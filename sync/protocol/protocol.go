// Package protocol is the wire format between an edge's forwarder and central's receiver, shared by
// both ends so neither can drift from the other.
//
// One edge partition is one lane, addressed as /v1/sync/{stream}/{partition}:
//
//	GET  /v1/sync/{stream}/{partition}   → 200 Position: where central will resume
//	POST /v1/sync/{stream}/{partition}   body = one storage.Chunk's Data (a zstd frame of whole,
//	                                     CRC32-C checked batches, exactly as storage returns it)
//	                                     → 200 Position after applying it
//	                                     → 409 Position when the chunk does not start at or below
//	                                       the expected offset (a reordered or lost predecessor)
//	                                     → 4xx Error with a reason for anything malformed; nothing
//	                                       is applied
//	                                     → 503 + Retry-After when central's disk is full
//
// The chunk's facts travel in headers (see the Header constants); a gap chunk has an empty body
// and the Gap headers instead. Every request carries the edge id and its bearer token.
//
// Every request also carries the lane's incarnation (HeaderIncarnation): the identity of the
// edge log the lane's offsets belong to, created with the log and kept in its metadata. A wiped
// or replaced data dir has a new one, so central knows offsets of the new log from the old
// log's and starts a new lane epoch at the offset HeaderIncarnationBase gives (0 for a new log):
// nothing acknowledged by the new log is mistaken for a repeat. An incarnation a lane has moved
// on from is refused (410). Requests without the header (edges older than it) keep working on
// lanes that never had one.
//
// Position has two offsets. Next is the offset central expects next: the forwarder pipelines
// from it. Committed is the offset below which central's dedupe state is checkpointed durably:
// after a crash central resumes no lower than Committed, so it is the only offset an edge may use
// to let retention delete forwarded records.
package protocol

import (
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/sync/internal/httpx"
)

// Paths.
const (
	SyncPrefix = "/v1/sync/"
)

// Request and response headers.
const (
	HeaderEdge     = "Tributary-Edge"      // edge id
	HeaderBase     = "Tributary-Base"      // chunk base offset
	HeaderNext     = "Tributary-Next"      // offset after the chunk
	HeaderRecords  = "Tributary-Records"   // records in the chunk
	HeaderRawBytes = "Tributary-Raw-Bytes" // raw batch bytes inside the body
	HeaderCRC      = "Tributary-Crc32c"    // CRC32-C of the body, decimal
	HeaderSealed   = "Tributary-Sealed"    // "1" when the body is a sealed segment's stored frame
	HeaderEdgeEnd  = "Tributary-Edge-End"  // the edge partition's end offset when sent (for lag)
	// HeaderEdgeVersion is the edge's build version, which central's console shows.
	HeaderEdgeVersion = "Tributary-Edge-Version"
	HeaderGapFrom     = "Tributary-Gap-From"   // gap chunk: first missing offset
	HeaderGapTo       = "Tributary-Gap-To"     // gap chunk: offset after the last missing one
	HeaderGapReason   = "Tributary-Gap-Reason" // gap chunk: why the range is missing
	HeaderGapTime     = "Tributary-Gap-Time"   // gap chunk: when the edge recorded it, unix ms
	// HeaderIncarnation identifies the edge log the lane's offsets come from.
	HeaderIncarnation = "Tributary-Incarnation"
	// HeaderIncarnationBase is the offset from which this incarnation's records differ from the
	// lane's previous incarnation (a log that went backwards keeps its prefix); absent means 0.
	HeaderIncarnationBase = "Tributary-Incarnation-Base"
)

// ValidIncarnation reports whether s may be an incarnation id: 1-64 of A-Z a-z 0-9 . _ -.
func ValidIncarnation(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Provenance headers central adds to every record it stores.
const (
	ProvEdge          = "edge"
	ProvEdgePartition = "edge-partition"
	ProvEdgeOffset    = "edge-offset"
	// ProvEdgeIncarnation is the lane's incarnation, on records from edges that send one; with
	// edge, edge-partition and edge-offset it is central's dedupe key.
	ProvEdgeIncarnation = "edge-incarnation"
	ProvCentralTime     = "central-receive-time" // unix milliseconds, decimal
)

// Position is central's answer on a lane.
type Position struct {
	Next      int64 `json:"next"`
	Committed int64 `json:"committed"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	// Position is set on 409 and whenever central knows the lane.
	Position *Position `json:"position,omitempty"`
}

// ChunkCRC is the checksum of a request body.
func ChunkCRC(body []byte) uint32 { return crc32.Checksum(body, castagnoli) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SyncPath is the lane path of a stream partition.
func SyncPath(stream string, partition int) string {
	return SyncPrefix + stream + "/" + strconv.Itoa(partition)
}

// ParseSyncPath splits a lane path into stream and partition.
func ParseSyncPath(path string) (stream string, partition int, err error) {
	rest, ok := strings.CutPrefix(path, SyncPrefix)
	if !ok {
		return "", 0, fmt.Errorf("path %q is not under %s", path, SyncPrefix)
	}
	stream, ps, ok := strings.Cut(rest, "/")
	if !ok || stream == "" || strings.Contains(ps, "/") {
		return "", 0, fmt.Errorf("path %q: want %s{stream}/{partition}", path, SyncPrefix)
	}
	partition, err = strconv.Atoi(ps)
	if err != nil || partition < 0 || partition > 1<<16 {
		return "", 0, fmt.Errorf("path %q: partition must be a small non-negative integer", path)
	}
	return stream, partition, nil
}

// Int64Header reads a required decimal header.
func Int64Header(h http.Header, name string) (int64, error) {
	v := h.Get(name)
	if v == "" {
		return 0, fmt.Errorf("missing header %s", name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("header %s: %q is not an integer", name, v)
	}
	return n, nil
}

// WriteError writes an Error body with the lane's position (nil when central does not know it).
func WriteError(w http.ResponseWriter, code int, pos *Position, format string, args ...any) {
	httpx.WriteJSON(w, code, Error{Error: fmt.Sprintf(format, args...), Position: pos})
}
