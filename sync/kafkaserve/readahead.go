package kafkaserve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Read-ahead. A consumer catching up fetches, decodes what it got, and only then asks for more:
// without read-ahead the listener sits idle while the client decodes, and the client waits while
// the listener encodes. So when a partition filled its share of a response, the listener encodes
// the partition's next share in the background, and the next fetch that asks for exactly that
// offset is served those bytes at once. The work ahead is bounded: one share (the client's
// per-partition limit, capped at maxAheadPartition) per partition, and maxAheadConn per
// connection; a fetch that asks for another offset or compression drops it.
const (
	maxAheadPartition = 4 << 20
	maxAheadConn      = 32 << 20
)

// aheadJob is one partition's share to read ahead: room bytes of pr's next batches.
type aheadJob struct {
	pr   *partReader
	room int
	zstd bool
}

// startAhead starts the read-ahead a fetch asked for (cc.aheadJobs), once its response is
// written: meanwhile the connection and the client's reading of it have the cores to
// themselves. The shares are encoded one after the other in one goroutine, into their readers'
// spare buffers: the client decodes a response on one goroutine too, so on a small box one
// read-ahead keeps ahead of it (encoding costs less per record than decoding) where a
// goroutine per partition would take the cores the client needs.
func (cc *conn) startAhead() {
	jobs := cc.aheadJobs
	cc.aheadJobs = nil
	if len(jobs) == 0 {
		return
	}
	dones := make([]chan struct{}, len(jobs))
	for i, j := range jobs {
		j.pr.settle()
		dones[i] = make(chan struct{})
		j.pr.aheadDone, j.pr.aheadFrom, j.pr.aheadZstd = dones[i], j.pr.offset(), j.zstd
	}
	cc.ahead.Add(1)
	go func() {
		defer cc.ahead.Done()
		var b batchBuilder
		for i, j := range jobs {
			b.zstd = j.zstd
			out := j.pr.spare[:0]
			if cap(out) < j.room {
				// The partition filled its last share, so it will likely fill this one: one
				// buffer of that size, not a doubling series of copies.
				out = make([]byte, 0, j.room)
			}
			out, _, err := encode(j.pr, &b, out, j.room, true)
			j.pr.ahead, j.pr.aheadErr = out, err
			close(dones[i])
		}
	}()
}

// settle waits for a read-ahead of pr to finish.
func (pr *partReader) settle() {
	if pr.aheadDone != nil {
		<-pr.aheadDone
		pr.aheadDone = nil
	}
}

// position is the offset the next fetch must ask for to continue where pr is, read-ahead
// included.
func (pr *partReader) position() int64 {
	pr.settle()
	if len(pr.ahead) > 0 {
		return pr.aheadFrom
	}
	return pr.offset()
}

// takeAhead moves what was read ahead into out, whole batches up to room bytes, and reports
// whether some were left over. The reader is put back at the first batch not taken. When not
// even the first batch fits (the client asks for less than before), or the read-ahead failed,
// nothing is taken: the fetch proper encodes to the new limit (and reports the error).
func (pr *partReader) takeAhead(out []byte, room int, zstd bool) ([]byte, bool) {
	pr.settle()
	ahead := pr.ahead
	pr.ahead = nil
	n := 0
	for n+batchHeaderLen <= len(ahead) {
		l := 12 + int(binary.BigEndian.Uint32(ahead[n+8:]))
		if n+l > room {
			break
		}
		n += l
	}
	if n == 0 || zstd != pr.aheadZstd {
		pr.rewind(pr.aheadFrom)
		if ahead != nil {
			pr.spare = ahead
		}
		return out, false
	}
	left := n < len(ahead)
	if left {
		pr.rewind(int64(binary.BigEndian.Uint64(ahead[n:])))
	}
	if len(out) == 0 {
		// Hand the ahead buffer to the response; the one the last response went out in is
		// free now and becomes the next read-ahead's.
		pr.spare, pr.buf = out, nil
		return ahead[:n], left
	}
	out = append(out, ahead[:n]...)
	pr.spare = ahead
	return out, left
}

// rewind puts the reader back at offset, forgetting what it had read past it.
func (pr *partReader) rewind(offset int64) {
	pr.next, pr.data, pr.inBatch = offset, nil, false
	pr.aheadErr = nil
}

// encode appends Kafka batches of pr's partition to out, up to room bytes past its length at the
// call (one record at least when first). full reports that it stopped for room, not at the end.
func encode(pr *partReader, b *batchBuilder, out []byte, room int, first bool) (_ []byte, full bool, err error) {
	before := len(out)
	var r storedRecord
	for {
		if !pr.inBatch {
			if err = pr.load(); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				break
			}
		}
		if pr.at == pr.cur.BaseOffset+int64(pr.cur.Count) {
			pr.inBatch = false
			if len(pr.recs) != 0 {
				pr.data = nil
				err = fmt.Errorf("stored batch at offset %d: %d bytes after its last record", pr.cur.BaseOffset, len(pr.recs))
				break
			}
			continue
		}
		rest, ok := parseStored(pr.recs, &r)
		if !ok {
			pr.inBatch, pr.data = false, nil
			err = fmt.Errorf("stored batch at offset %d: record %d is malformed", pr.cur.BaseOffset, pr.at-pr.cur.BaseOffset)
			break
		}
		if pr.at < pr.next { // below the offset asked for, in the batch that holds it
			pr.recs, pr.at = rest, pr.at+1
			continue
		}
		// The open batch is part of out already, at its uncompressed size; a record that
		// opens one counts its header.
		ts := kafkaTimestamp(pr.cur.BaseTimestamp, &r)
		n := b.size(&r, pr.at, ts)
		if len(out)-before+n > room && !(first && len(out) == before) {
			full = true
			break
		}
		out = b.add(out, &r, pr.at, ts, n)
		pr.recs, pr.at = rest, pr.at+1
		pr.next = pr.at
		if len(out)-b.start >= batchTarget {
			out = b.flush(out)
		}
	}
	return b.flush(out), full, err
}
