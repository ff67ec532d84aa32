package kafkasink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// positions is what a session knows about the export.
type positions struct {
	// resume is, per central partition, the next offset to produce; every record below it is in
	// Kafka.
	resume []int64
	// skip holds, per central partition, offsets at or above resume that are already in Kafka
	// (possible only when the topic's partition count differs from the stream's, so one central
	// partition spreads over several Kafka partitions that can fail independently).
	skip []map[int64]bool
	// scanStart is where the last scan of each Kafka partition began; scanEnd is the offset after
	// the last of our records known there. The checkpoint stores scanEnd when skip is empty, else
	// scanStart, so the next scan always covers every record above the stored cursors.
	scanStart map[int32]int64
	scanEnd   map[int32]int64
}

func (p *positions) advance(partition int, next int64) {
	p.resume[partition] = next
	if skip := p.skip[partition]; len(skip) > 0 {
		for off := range skip {
			if off < next {
				delete(skip, off)
			}
		}
	}
}

// checkpointMeta is stored in the central log's metadata under the sink's cursor name.
type checkpointMeta struct {
	Topic    string          `json:"topic"`
	LogID    string          `json:"log_id"`
	ScanFrom map[int32]int64 `json:"scan_from"`
}

func (s *Sink) metaKey() string { return "checkpoint/" + s.cfg.Cursor }

// checkpoint stores the cursor, then the Kafka offsets to scan from. The order matters: a crash
// between the two leaves a newer cursor with older scan offsets, which only makes the next scan
// longer; the reverse could skip records written after the older cursor.
func (s *Sink) checkpoint(stream *storage.Stream, pos *positions) error {
	cursors := make(map[int]int64, len(pos.resume))
	for p, off := range pos.resume {
		cursors[p] = off
	}
	if err := s.log.SetCursors(s.cfg.Cursor, stream.Name(), cursors); err != nil {
		return fmt.Errorf("store kafka sink cursor: %w", err)
	}
	scanFrom := pos.scanEnd
	for _, skip := range pos.skip {
		if len(skip) > 0 {
			scanFrom = pos.scanStart
			break
		}
	}
	b, err := json.Marshal(checkpointMeta{Topic: s.cfg.Topic, LogID: s.logID, ScanFrom: scanFrom})
	if err != nil {
		return fmt.Errorf("encode kafka sink checkpoint: %w", err)
	}
	if err := s.log.SetMeta(metaNamespace, s.metaKey(), b); err != nil {
		return fmt.Errorf("store kafka sink checkpoint: %w", err)
	}
	return nil
}

// recover learns where to resume: the stored cursor, moved forward past every record of ours that
// Kafka holds above it. The stored cursor alone is not enough: the sink may have died after Kafka
// acknowledged records and before the cursor was stored.
func (s *Sink) recover(ctx context.Context, stream *storage.Stream) (*positions, error) {
	n := stream.Partitions()
	pos := &positions{resume: make([]int64, n), skip: make([]map[int64]bool, n)}
	for p := range n {
		pos.resume[p], _ = s.log.Cursor(s.cfg.Cursor, stream.Name(), p)
		pos.skip[p] = map[int64]bool{}
	}
	var stored checkpointMeta
	if b, err := s.log.Meta(metaNamespace, s.metaKey()); err != nil {
		return nil, fmt.Errorf("read kafka sink checkpoint: %w", err)
	} else if len(b) > 0 {
		if err := json.Unmarshal(b, &stored); err != nil {
			s.logger.Warn("kafka sink checkpoint unreadable; scanning the whole topic", "err", err)
			stored = checkpointMeta{}
		}
	}
	if stored.Topic != s.cfg.Topic || stored.LogID != s.logID {
		stored.ScanFrom = nil // another topic or log: its offsets mean nothing here
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.ScanTimeout)
	defer cancel()
	admin, err := kgo.NewClient(s.kopts...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	defer admin.Close()
	starts, ends, err := s.partitionBounds(ctx, admin)
	if err != nil {
		return nil, err
	}
	pos.scanStart = make(map[int32]int64, len(ends))
	pos.scanEnd = make(map[int32]int64, len(ends))
	from := map[int32]kgo.Offset{}
	for k, end := range ends {
		start := max(stored.ScanFrom[k], starts[k])
		start = min(start, end) // a recreated, shorter topic
		pos.scanStart[k], pos.scanEnd[k] = start, end
		if start < end {
			from[k] = kgo.NewOffset().At(start)
		}
	}
	seen := make([]map[int64]bool, n)
	for p := range seen {
		seen[p] = map[int64]bool{}
	}
	scanned := 0
	if len(from) > 0 {
		scanned, err = s.scan(ctx, from, ends, func(r *kgo.Record) {
			p, off, ok := s.centralPosition(r, stream)
			if ok && off >= pos.resume[p] {
				seen[p][off] = true
			}
		})
		if err != nil {
			return nil, err
		}
	}
	ahead := 0
	for p := range n {
		for seen[p][pos.resume[p]] {
			delete(seen[p], pos.resume[p])
			pos.resume[p]++
		}
		for off := range seen[p] {
			if off > pos.resume[p] {
				pos.skip[p][off] = true
				ahead++
			}
		}
	}
	s.logger.Info("kafka sink scanned the topic's tail", "records", scanned, "resume", pos.resume,
		"already_sent_ahead", ahead)
	return pos, nil
}

// centralPosition reads the sink headers of a Kafka record; ok is false for records another
// stream, another central log or another producer wrote.
func (s *Sink) centralPosition(r *kgo.Record, stream *storage.Stream) (partition int, offset int64, ok bool) {
	var haveLog, haveStream, haveP, haveOff bool
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderCentralLog:
			haveLog = string(h.Value) == s.logID
		case HeaderCentralStream:
			haveStream = string(h.Value) == stream.Name()
		case HeaderCentralPartition:
			p, err := strconv.Atoi(string(h.Value))
			partition, haveP = p, err == nil && p >= 0 && p < stream.Partitions()
		case HeaderCentralOffset:
			off, err := strconv.ParseInt(string(h.Value), 10, 64)
			offset, haveOff = off, err == nil && off >= 0
		}
	}
	return partition, offset, haveLog && haveStream && haveP && haveOff
}

// partitionBounds lists the topic's partitions with their log start and end offsets.
func (s *Sink) partitionBounds(ctx context.Context, cl *kgo.Client) (starts, ends map[int32]int64, err error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(s.cfg.Topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, nil, fmt.Errorf("read kafka metadata: %w", err)
	}
	if len(mresp.Topics) != 1 {
		return nil, nil, fmt.Errorf("read kafka metadata: %d topics in the answer", len(mresp.Topics))
	}
	t := mresp.Topics[0]
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, nil, fmt.Errorf("kafka topic %q does not exist: create it, with as many partitions as central stream %q so devices keep their partition numbers", s.cfg.Topic, s.cfg.Stream)
		}
		return nil, nil, fmt.Errorf("read kafka metadata of topic %q: %w", s.cfg.Topic, err)
	}
	starts, ends = map[int32]int64{}, map[int32]int64{}
	for _, ts := range []int64{-2, -1} { // earliest, latest
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = s.cfg.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition = p.Partition
			rp.CurrentLeaderEpoch = -1
			rp.Timestamp = ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		for _, shard := range cl.RequestSharded(ctx, req) {
			if shard.Err != nil {
				return nil, nil, fmt.Errorf("list kafka offsets: %w", shard.Err)
			}
			for _, rt := range shard.Resp.(*kmsg.ListOffsetsResponse).Topics {
				for _, rp := range rt.Partitions {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						return nil, nil, fmt.Errorf("list kafka offsets of partition %d: %w", rp.Partition, err)
					}
					if ts == -2 {
						starts[rp.Partition] = rp.Offset
					} else {
						ends[rp.Partition] = rp.Offset
					}
				}
			}
		}
	}
	if len(ends) != len(t.Partitions) {
		return nil, nil, fmt.Errorf("list kafka offsets: %d of %d partitions answered", len(ends), len(t.Partitions))
	}
	return starts, ends, nil
}

// scan reads each listed partition from its offset up to its end offset.
func (s *Sink) scan(ctx context.Context, from map[int32]kgo.Offset, ends map[int32]int64, fn func(*kgo.Record)) (int, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.Topic: from}),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}, s.kopts...)...)
	if err != nil {
		return 0, fmt.Errorf("create kafka scanner: %w", err)
	}
	defer cl.Close()
	pending := make(map[int32]bool, len(from))
	for k := range from {
		pending[k] = true
	}
	n := 0
	for len(pending) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("scan kafka topic %s: %d partitions unread after %s: %w", s.cfg.Topic, len(pending), s.cfg.ScanTimeout, err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) {
			ferr = fmt.Errorf("scan kafka partition %d: %w", p, err)
		})
		if ferr != nil {
			return n, ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if !pending[r.Partition] {
				return
			}
			n++
			fn(r)
			if r.Offset+1 >= ends[r.Partition] {
				delete(pending, r.Partition)
			}
		})
	}
	return n, nil
}
