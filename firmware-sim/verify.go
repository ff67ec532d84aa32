package firmwaresim

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"time"
)

// Record is one line of the merged stream as `tributary consume --format jsonl` prints it.
// Value holds the payload when it is JSON; otherwise ValueBase64 holds its bytes (encoding/json
// decodes base64 into a []byte field).
type Record struct {
	Stream        string          `json:"stream"`
	Partition     int64           `json:"partition"`
	Offset        int64           `json:"offset"`
	Key           string          `json:"key"`
	Timestamp     json.RawMessage `json:"timestamp"`
	Edge          string          `json:"edge"`
	EdgePartition int64           `json:"edge_partition"`
	EdgeOffset    int64           `json:"edge_offset"`
	Headers       json.RawMessage `json:"headers"`
	Value         json.RawMessage `json:"value"`
	ValueBase64   []byte          `json:"value_base64"`
}

// Source is where verification reads the merged stream from: JSON lines, one [Record] each.
// [FileSource] reads a file or stdin; a consume-API client can implement it by returning an
// HTTP response body.
type Source interface {
	Open(ctx context.Context) (io.ReadCloser, error)
}

// FileSource reads JSON lines from the file at Path, or from standard input when Path is "-".
type FileSource struct{ Path string }

// Open opens the file.
func (s FileSource) Open(context.Context) (io.ReadCloser, error) {
	if s.Path == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, fmt.Errorf("open stream file: %w", err)
	}
	return f, nil
}

// VerifyOptions tune [Verify]; nil means the defaults.
type VerifyOptions struct {
	// Manifest, from the simulator run, separates acked-and-lost readings (a failure) from
	// never-acked missing ones (expected). Without it every gap counts as lost.
	Manifest *Manifest
	// Stream keeps only records of this stream; "" keeps all.
	Stream string
	// LatencyHeader names a record header holding the arrival time (unix ms or RFC 3339). When
	// empty, latency is measured against the record's "timestamp" field.
	LatencyHeader string
	// MaxLineBytes bounds one JSON line. Default 16 MiB.
	MaxLineBytes int
}

// ErrVerificationFailed is returned by [Verification.Err] when readings were lost, duplicated or
// out of order, or the stream could not be read as records.
var ErrVerificationFailed = errors.New("verification failed")

// maxRangesPerDevice bounds the lost ranges listed per device, so a badly broken run still gives
// a readable report; the counts stay exact.
const maxRangesPerDevice = 50

// DeviceVerification is what verification found for one device.
type DeviceVerification struct {
	Device string `json:"device"`
	// Received counts the device's readings in the stream, duplicates included.
	Received uint64 `json:"received"`
	MaxSeq   uint64 `json:"max_seq"`
	// Lost counts missing seqs that were acked (with a manifest) or, without one, every seq
	// missing below the highest received. LostRanges lists the first of them.
	Lost       uint64     `json:"lost"`
	LostRanges []SeqRange `json:"lost_ranges,omitempty"`
	// UnackedMissing counts missing seqs the manifest says were never acked.
	UnackedMissing uint64 `json:"unacked_missing"`
	// Duplicated counts readings whose seq had already been received.
	Duplicated uint64 `json:"duplicated"`
	// OutOfOrder counts readings whose seq is lower than one received before them.
	OutOfOrder uint64 `json:"out_of_order"`
	// Latency is arrival time minus the device's ts; NegativeLatency counts readings that
	// arrived "before" they were taken (a device clock ahead), which the summary leaves out.
	Latency         LatencySummary `json:"latency"`
	NegativeLatency uint64         `json:"negative_latency"`

	seen    seqSet
	latency histogram
}

// Verification is the result of checking a merged stream.
type Verification struct {
	Records        uint64 `json:"records"`
	BadLines       uint64 `json:"bad_lines"`
	Received       uint64 `json:"received"`
	Lost           uint64 `json:"lost"`
	UnackedMissing uint64 `json:"unacked_missing"`
	Duplicated     uint64 `json:"duplicated"`
	OutOfOrder     uint64 `json:"out_of_order"`
	// Undecodable counts records whose value is not a reading (malformed faults end up here).
	Undecodable uint64 `json:"undecodable"`
	// FaultsDelivered counts faulty publishes that got through to the stream, by kind.
	FaultsDelivered map[string]uint64 `json:"faults_delivered,omitempty"`
	// Misrouted counts readings whose record key is not the device named in the payload.
	Misrouted uint64 `json:"misrouted"`
	// LatencySource says what latency was measured against: "timestamp" or "header:<name>".
	LatencySource   string                `json:"latency_source"`
	Latency         LatencySummary        `json:"latency"`
	NegativeLatency uint64                `json:"negative_latency"`
	NoArrivalTime   uint64                `json:"no_arrival_time"`
	Devices         []*DeviceVerification `json:"devices"`
	// Sparkplug counts Sparkplug B messages and gap markers, when the stream holds any.
	Sparkplug SparkplugVerification `json:"sparkplug"`
}

// OK reports whether nothing was lost, duplicated or reordered and every line was a record.
func (v *Verification) OK() bool {
	return v.Lost == 0 && v.Duplicated == 0 && v.OutOfOrder == 0 && v.BadLines == 0 && v.Sparkplug.UnresolvedAliases == 0
}

// Err returns nil when [Verification.OK], else an error wrapping [ErrVerificationFailed] that
// says what went wrong.
func (v *Verification) Err() error {
	if v.OK() {
		return nil
	}
	return fmt.Errorf("%w: %d lost, %d duplicated, %d out of order, %d unreadable lines, %d Sparkplug metrics with unresolved aliases",
		ErrVerificationFailed, v.Lost, v.Duplicated, v.OutOfOrder, v.BadLines, v.Sparkplug.UnresolvedAliases)
}

// VerifySource opens src and verifies what it yields; see [Verify].
func VerifySource(ctx context.Context, src Source, opts *VerifyOptions) (*Verification, error) {
	rc, err := src.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return Verify(rc, opts)
}

// payloadFields are the parts of a reading verification needs.
type payloadFields struct {
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	TS     int64  `json:"ts"`
	Fault  string `json:"fault"`
}

// Verify reads records (JSON lines) from r and checks, per device, that the seqs form 1..n with
// no gap, no repeat and no step backwards. The returned error is for I/O only; verification
// failures are in the result (see [Verification.Err]).
func Verify(r io.Reader, opts *VerifyOptions) (*Verification, error) {
	if opts == nil {
		opts = &VerifyOptions{}
	}
	maxLine := cmp.Or(opts.MaxLineBytes, 16<<20)
	v := &Verification{LatencySource: "timestamp"}
	if opts.LatencyHeader != "" {
		v.LatencySource = "header:" + opts.LatencyHeader
	}
	devices := make(map[string]*DeviceVerification)
	device := func(id string) *DeviceVerification {
		d := devices[id]
		if d == nil {
			d = &DeviceVerification{Device: id}
			devices[id] = d
		}
		return d
	}

	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			v.BadLines++
			continue
		}
		if opts.Stream != "" && rec.Stream != opts.Stream {
			continue
		}
		v.Records++
		var p payloadFields
		if sp, reading, ok := sparkplugReading(rec.Value, &v.Sparkplug); ok {
			if !reading {
				continue
			}
			p = sp
		} else if len(rec.Value) == 0 || json.Unmarshal(rec.Value, &p) != nil || p.Device == "" {
			v.Undecodable++
			continue
		}
		if p.Fault != "" {
			if v.FaultsDelivered == nil {
				v.FaultsDelivered = make(map[string]uint64)
			}
			v.FaultsDelivered[p.Fault]++
			continue
		}
		if p.Seq == 0 {
			v.Undecodable++
			continue
		}
		if rec.Key != "" && rec.Key != p.Device {
			v.Misrouted++
		}
		d := device(p.Device)
		d.Received++
		v.Received++
		switch {
		case d.seen.has(p.Seq):
			d.Duplicated++
		case p.Seq < d.MaxSeq:
			d.OutOfOrder++
			d.seen.add(p.Seq)
		default:
			d.seen.add(p.Seq)
			d.MaxSeq = p.Seq
		}
		arrival, ok := arrivalTime(&rec, opts.LatencyHeader)
		switch lat := arrival.Sub(time.UnixMilli(p.TS)); {
		case !ok:
			v.NoArrivalTime++
		case lat < 0:
			d.NegativeLatency++
		default:
			d.latency.record(lat)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read stream after %d records: %w", v.Records, err)
	}

	if m := opts.Manifest; m != nil {
		for id := range m.Devices {
			device(id)
		}
	}
	var all histogram
	for _, id := range slices.Sorted(maps.Keys(devices)) {
		d := devices[id]
		var dm *DeviceManifest
		if opts.Manifest != nil {
			dm = opts.Manifest.Devices[id]
		}
		d.account(dm)
		d.Latency = d.latency.summary()
		all.merge(&d.latency)
		v.Lost += d.Lost
		v.UnackedMissing += d.UnackedMissing
		v.Duplicated += d.Duplicated
		v.OutOfOrder += d.OutOfOrder
		v.NegativeLatency += d.NegativeLatency
		v.Devices = append(v.Devices, d)
	}
	v.Latency = all.summary()
	return v, nil
}

// account splits the device's missing seqs into lost and unacked-missing. With a manifest entry,
// the device is expected to have sent 1..LastSeq and only acked seqs must arrive; without one,
// every gap below the highest seq received is lost.
func (d *DeviceVerification) account(dm *DeviceManifest) {
	upper := d.MaxSeq
	if dm != nil {
		upper = max(upper, dm.LastSeq)
	}
	for _, gap := range d.seen.missing(upper) {
		if dm == nil {
			d.addLost(gap)
			continue
		}
		// Walk the acked ranges overlapping the gap: overlap is lost, the rest unacked-missing.
		i, _ := slices.BinarySearchFunc(dm.Acked, gap.First, func(r SeqRange, s uint64) int { return cmp.Compare(r.Last, s) })
		var lost uint64
		for ; i < len(dm.Acked) && dm.Acked[i].First <= gap.Last; i++ {
			overlap := SeqRange{max(gap.First, dm.Acked[i].First), min(gap.Last, dm.Acked[i].Last)}
			d.addLost(overlap)
			lost += overlap.Last - overlap.First + 1
		}
		d.UnackedMissing += gap.Last - gap.First + 1 - lost
	}
}

func (d *DeviceVerification) addLost(r SeqRange) {
	d.Lost += r.Last - r.First + 1
	if len(d.LostRanges) < maxRangesPerDevice {
		d.LostRanges = append(d.LostRanges, r)
	}
}

// arrivalTime is when the record reached the log verification reads: the named header, or the
// record timestamp. Numbers are unix milliseconds (larger magnitudes are taken as micro- or
// nanoseconds); strings are RFC 3339 or a number.
func arrivalTime(rec *Record, header string) (time.Time, bool) {
	if header == "" {
		return parseTime(rec.Timestamp)
	}
	var byName map[string]json.RawMessage
	if json.Unmarshal(rec.Headers, &byName) == nil {
		return parseTime(byName[header])
	}
	// Kafka-style headers: a list of {"key": ..., "value": ...}.
	var list []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if json.Unmarshal(rec.Headers, &list) == nil {
		for _, h := range list {
			if h.Key == header {
				return parseTime(h.Value)
			}
		}
	}
	return time.Time{}, false
}

func parseTime(raw json.RawMessage) (time.Time, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t, true
		}
		raw = json.RawMessage(s)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	switch {
	case n > 1e17:
		return time.Unix(0, n), true
	case n > 1e14:
		return time.UnixMicro(n), true
	default:
		return time.UnixMilli(n), true
	}
}
