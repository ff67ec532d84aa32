package kafkaserve

import (
	"encoding/binary"
	"net"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A Fetch response is mostly record batches, which kmsg's AppendTo would copy into the
// response buffer. fetchBuffers encodes the same bytes but leaves large record sets where they
// are, as buffers of their own for one writev. It covers what this listener sends (Fetch v4 to
// v12, no aborted transactions, no tagged fields); fetchBuffersFit says when a response is that.

// inlineBatches is the record set size below which copying beats a buffer of its own.
const inlineBatches = 4 << 10

// fetchBuffersFit reports whether fetchBuffers encodes r exactly as r.AppendTo would.
func fetchBuffersFit(r *kmsg.FetchResponse) bool {
	if r.Version < 4 || r.Version > 12 || len(r.Brokers) > 0 || r.UnknownTags.Len() > 0 {
		return false
	}
	for i := range r.Topics {
		t := &r.Topics[i]
		if t.UnknownTags.Len() > 0 {
			return false
		}
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if p.AbortedTransactions != nil || p.UnknownTags.Len() > 0 ||
				p.DivergingEpoch.Epoch != -1 || p.DivergingEpoch.EndOffset != -1 || p.DivergingEpoch.UnknownTags.Len() > 0 ||
				p.CurrentLeader.LeaderID != -1 || p.CurrentLeader.LeaderEpoch != -1 || p.CurrentLeader.UnknownTags.Len() > 0 ||
				p.SnapshotID.EndOffset != -1 || p.SnapshotID.Epoch != -1 || p.SnapshotID.UnknownTags.Len() > 0 {
				return false
			}
		}
	}
	return true
}

// fetchBuffers appends r's encoding to out and returns it as buffers whose concatenation is
// out followed by r.AppendTo(nil); r must pass fetchBuffersFit. The buffers alias r's record sets.
func fetchBuffers(out []byte, r *kmsg.FetchResponse) net.Buffers {
	flexible := r.Version >= 12
	var bufs net.Buffers
	arrayLen := func(n int) {
		if flexible {
			out = binary.AppendUvarint(out, uint64(n)+1)
		} else {
			out = binary.BigEndian.AppendUint32(out, uint32(n))
		}
	}
	out = binary.BigEndian.AppendUint32(out, uint32(r.ThrottleMillis))
	if r.Version >= 7 {
		out = binary.BigEndian.AppendUint16(out, uint16(r.ErrorCode))
		out = binary.BigEndian.AppendUint32(out, uint32(r.SessionID))
	}
	arrayLen(len(r.Topics))
	for i := range r.Topics {
		t := &r.Topics[i]
		if flexible {
			out = binary.AppendUvarint(out, uint64(len(t.Topic))+1)
		} else {
			out = binary.BigEndian.AppendUint16(out, uint16(len(t.Topic)))
		}
		out = append(out, t.Topic...)
		arrayLen(len(t.Partitions))
		for j := range t.Partitions {
			p := &t.Partitions[j]
			out = binary.BigEndian.AppendUint32(out, uint32(p.Partition))
			out = binary.BigEndian.AppendUint16(out, uint16(p.ErrorCode))
			out = binary.BigEndian.AppendUint64(out, uint64(p.HighWatermark))
			out = binary.BigEndian.AppendUint64(out, uint64(p.LastStableOffset))
			if r.Version >= 5 {
				out = binary.BigEndian.AppendUint64(out, uint64(p.LogStartOffset))
			}
			// Aborted transactions: none (a null array).
			if flexible {
				out = append(out, 0)
			} else {
				out = binary.BigEndian.AppendUint32(out, ^uint32(0))
			}
			if r.Version >= 11 {
				out = binary.BigEndian.AppendUint32(out, uint32(p.PreferredReadReplica))
			}
			switch rb := p.RecordBatches; {
			case rb == nil && flexible:
				out = append(out, 0)
			case rb == nil:
				out = binary.BigEndian.AppendUint32(out, ^uint32(0))
			default:
				if flexible {
					out = binary.AppendUvarint(out, uint64(len(rb))+1)
				} else {
					out = binary.BigEndian.AppendUint32(out, uint32(len(rb)))
				}
				if len(rb) < inlineBatches {
					out = append(out, rb...)
				} else {
					bufs = append(bufs, out, rb)
					out = out[len(out):]
				}
			}
			if flexible {
				out = append(out, 0) // no tagged fields
			}
		}
		if flexible {
			out = append(out, 0)
		}
	}
	if flexible {
		out = append(out, 0)
	}
	return append(bufs, out)
}
