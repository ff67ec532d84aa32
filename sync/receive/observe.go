package receive

import "github.com/tributary-iot/tributary/storage"

// AppliedChunk is what one chunk put into central's log, handed to Config.OnApplied once its
// records are durable, so that an observer (the web console) counts arrivals without reading the
// log a second time.
//
// Nothing in it is modified or reused by the receiver after the call: an observer may keep it,
// which holds the chunk's decoded records (about its raw bytes) in memory meanwhile.
type AppliedChunk struct {
	Edge          string
	Stream        string // the central stream, named as the edge's
	EdgePartition int
	// Records are the chunk's records as the edge sent them, at edge offsets Records[0].Offset
	// onwards, one by one; repeats of records central already had are among them. Read-only.
	Records []storage.Entry
	// RawBytes is the size of the buffer the records were decoded into: their keys, values and
	// header values alias it.
	RawBytes int
	// Parts are the central partitions this apply stored records in, each with the records it
	// stored there: repeats are not in any Part.
	Parts []AppliedPart
}

// AppliedPart is the records one apply stored in one central partition, in offset order.
type AppliedPart struct {
	Partition int
	// EdgeOffsets[i] is the edge offset of the i-th record stored (its record is
	// Records[EdgeOffsets[i]-Records[0].Offset]), Offsets[i] its offset in the central partition.
	EdgeOffsets []int64
	Offsets     []int64
}

// report hands the apply's durable records to the observer. Every tracker of pa has finished
// (pa.remaining reached zero), so each tracker's central offsets are complete and no callback
// writes them any more. It runs on a committer or on the queuing request: OnApplied must not
// block.
func (pa *pendingApply) report(s *lane) {
	if pa.observe == nil {
		return
	}
	ac := &AppliedChunk{Edge: s.key.edge, Stream: s.stream, EdgePartition: s.key.partition, Records: pa.records, RawBytes: pa.raw}
	for _, tr := range pa.trackers {
		// A failed write stops its partition: what was stored is the prefix whose callbacks
		// succeeded, and central holds those records whatever became of the rest.
		if tr == nil || len(tr.central) == 0 {
			continue
		}
		n := len(tr.central)
		ac.Parts = append(ac.Parts, AppliedPart{Partition: tr.p, EdgeOffsets: tr.offsets[:n:n], Offsets: tr.central})
	}
	if len(ac.Parts) > 0 {
		pa.observe(ac)
	}
}
