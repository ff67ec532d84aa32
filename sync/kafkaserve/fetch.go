package kafkaserve

import (
	"context"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// partReader keeps a partition's raw reader between fetches of one connection, so a consumer
// reading a partition in order reads and decompresses each stored batch once, not once per fetch.
// Records go from their stored form straight into Kafka batches: no Record is built.
type partReader struct {
	rr      *storage.RawReader
	next    int64  // the next offset to serve
	data    []byte // stored batches of the last raw read not yet walked
	cur     storage.RawBatch
	recs    []byte // cur's records from the one at offset at on, when inBatch
	at      int64
	inBatch bool
	buf     []byte // the partition's record batches of the last response, reused once sent

	// Read-ahead (readahead.go): Kafka batches from aheadFrom on, encoded in the background
	// into what was spare; aheadDone is closed when that is over.
	aheadDone chan struct{}
	ahead     []byte
	aheadFrom int64
	aheadZstd bool
	aheadErr  error
	spare     []byte
}

// rawReadBytes is how much of a plain segment one raw read takes: a sealed frame's size.
const rawReadBytes = 256 << 10

func newPartReader(p *storage.Partition, from int64, buf []byte) *partReader {
	return &partReader{rr: p.NewRawReader(), next: max(from, 0), buf: buf}
}

func (pr *partReader) bufOrNil() []byte {
	if pr == nil {
		return nil
	}
	return pr.buf
}

func (pr *partReader) offset() int64 { return pr.next }

// load makes the stored batch holding the reader's offset, or the first one after it, current.
// Gaps are skipped: Kafka clients accept offsets that jump. The batch aliases the raw reader's
// buffer until its next read, which happens only here.
func (pr *partReader) load() error {
	for {
		if len(pr.data) == 0 {
			rb, err := pr.rr.Read(pr.next, rawReadBytes)
			if err != nil {
				return err
			}
			if rb.Gap != nil {
				pr.next = rb.Gap.To
				continue
			}
			pr.data = rb.Data
		}
		b, rest, err := storage.SplitBatch(pr.data)
		if err != nil {
			pr.data = nil
			return err
		}
		pr.data = rest
		if b.BaseOffset+int64(b.Count) <= pr.next {
			continue // wholly below the offset asked for
		}
		pr.cur, pr.recs, pr.at, pr.inBatch = b, b.Records(), b.BaseOffset, true
		return nil
	}
}

// fetchPart is one requested partition while a fetch is assembled.
type fetchPart struct {
	resp   *kmsg.FetchResponseTopicPartition
	part   *storage.Partition
	reader *partReader
	topic  string
	limit  int // the client's per-partition byte limit
	full   bool
}

// maxFetchWait bounds a long poll whatever the client asks, so a connection is never parked
// for good.
const maxFetchWait = 60 * time.Second

func (cc *conn) fetch(ctx context.Context, r *kmsg.FetchRequest) *kmsg.FetchResponse {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	sess, incremental, code := cc.beginFetchSession(r)
	if code != 0 {
		resp.ErrorCode = code
		return resp
	}
	zstd := cc.s.cfg.Compression == "zstd" && r.Version >= 10
	var parts []*fetchPart
	var waitOn []*storage.Partition
	used := map[partKey]bool{}
	anyError := false
	for _, rt := range r.Topics {
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		t.Partitions = make([]kmsg.FetchResponseTopicPartition, len(rt.Partitions))
		resp.Topics = append(resp.Topics, t)
		rtp := &resp.Topics[len(resp.Topics)-1]
		for i, rp := range rt.Partitions {
			p := &rtp.Partitions[i]
			*p = kmsg.NewFetchResponseTopicPartition()
			p.Partition = rp.Partition
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
			p.RecordBatches = []byte{} // empty, not null: librdkafka refuses a null record set
			part, kerrv := cc.s.partition(rt.Topic, rp.Partition)
			if kerrv != nil {
				p.ErrorCode = kerrv.Code
				anyError = true
				continue
			}
			start, end := part.StartOffset(), part.EndOffset()
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = end, end, start
			if r.Version >= 9 && rp.CurrentLeaderEpoch > leaderEpoch {
				// A client that saw a newer epoch than ours (KIP-320): it retries after a
				// metadata refresh.
				p.ErrorCode = kerr.UnknownLeaderEpoch.Code
				anyError = true
				continue
			}
			if rp.FetchOffset < start || rp.FetchOffset > end {
				p.ErrorCode = kerr.OffsetOutOfRange.Code
				anyError = true
				continue
			}
			key := partKey{rt.Topic, rp.Partition}
			pr := cc.readers[key]
			switch {
			case used[key]:
				// The same partition twice in one request: a reader of its own, not kept.
				pr = newPartReader(part, rp.FetchOffset, nil)
			case pr == nil || pr.position() != rp.FetchOffset:
				if len(cc.readers) > 4096 {
					clear(cc.readers)
				}
				pr = newPartReader(part, rp.FetchOffset, pr.bufOrNil())
				cc.readers[key] = pr
			}
			used[key] = true
			// The response is encoded into the connection's buffer before the next request
			// is read, so this partition's bytes can be reused by the next fetch.
			if p.RecordBatches = pr.buf[:0]; p.RecordBatches == nil {
				p.RecordBatches = []byte{}
			}
			parts = append(parts, &fetchPart{resp: p, part: part, reader: pr, topic: rt.Topic, limit: int(max(rp.PartitionMaxBytes, 1))})
			waitOn = append(waitOn, part)
		}
	}
	wait := min(time.Duration(r.MaxWaitMillis)*time.Millisecond, maxFetchWait)
	deadline := time.Now().Add(wait)
	total, limit := 0, int(r.MaxBytes)
	if r.Version < 3 || limit <= 0 {
		limit = 1 << 30
	}
	for _, fp := range parts {
		if fp.reader.aheadDone == nil && fp.reader.ahead == nil && fp.reader.aheadErr == nil {
			continue
		}
		before := len(fp.resp.RecordBatches)
		var left bool
		fp.resp.RecordBatches, left = fp.reader.takeAhead(fp.resp.RecordBatches, min(fp.limit, limit-total), zstd)
		total += len(fp.resp.RecordBatches) - before
		fp.full = left || len(fp.resp.RecordBatches) >= fp.limit
	}
	b := &batchBuilder{zstd: zstd}
	for {
		// Take the wake-up channels before reading, so a record landing in between wakes us.
		chans := make([]<-chan struct{}, len(waitOn))
		for i, p := range waitOn {
			chans[i] = p.Changed()
		}
		for _, fp := range parts {
			if total >= limit {
				break
			}
			if fp.full {
				continue
			}
			// Kafka's rule: the first batch of a response is returned even over the limits,
			// so a record larger than them never blocks a consumer.
			n, err := fill(fp, b, min(fp.limit-len(fp.resp.RecordBatches), limit-total), total == 0)
			total += n
			if err != nil {
				fp.resp.ErrorCode = kerr.KafkaStorageError.Code
				cc.s.logger.Error("kafka fetch read failed", "partition", fp.part.ID(), "stream", fp.part.Stream(), "err", err)
				anyError = true
			}
		}
		if total >= int(r.MinBytes) || anyError || len(waitOn) == 0 || !time.Now().Before(deadline) {
			break
		}
		if !waitAny(ctx, chans, time.Until(deadline)) {
			break
		}
	}
	aheadBytes := 0
	for _, fp := range parts {
		end := fp.part.EndOffset()
		fp.resp.HighWatermark, fp.resp.LastStableOffset = end, end
		if cap(fp.resp.RecordBatches) <= 8<<20 {
			fp.reader.buf = fp.resp.RecordBatches
		}
		// A partition that filled its share is behind: encode its next share meanwhile.
		room := min(fp.limit, maxAheadPartition)
		if fp.full && fp.resp.ErrorCode == 0 && fp.reader != cc.readers[partKey{fp.topic, fp.resp.Partition}] {
			continue // a reader of its own, for a partition asked twice
		}
		if fp.full && fp.resp.ErrorCode == 0 && aheadBytes+room <= maxAheadConn {
			aheadBytes += room
			cc.aheadJobs = append(cc.aheadJobs, aheadJob{fp.reader, room, zstd})
		}
	}
	if sess != nil {
		sess.respond(resp, incremental)
	}
	return resp
}

// fill appends Kafka batches of fp's partition up to room bytes (one batch at least when first)
// and returns the bytes added.
func fill(fp *fetchPart, b *batchBuilder, room int, first bool) (int, error) {
	before := len(fp.resp.RecordBatches)
	out, full, err := encode(fp.reader, b, fp.resp.RecordBatches, room, first)
	fp.resp.RecordBatches, fp.full = out, fp.full || full
	return len(out) - before, err
}

// waitAny blocks until one channel closes (true), or d passes or ctx ends (false).
func waitAny(ctx context.Context, chans []<-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	cases := make([]reflect.SelectCase, 0, len(chans)+2)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.C)})
	for _, c := range chans {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen >= 2
}
