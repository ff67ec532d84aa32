package receive

import "github.com/tributary-iot/tributary/storage"

// Observer is told what each apply stores, from the apply path itself, so that a counter kept
// outside the receiver (the web console's) learns what arrives without reading central's log a
// second time. Its methods run on the apply path: they must be quick and must never block.
type Observer interface {
	// Apply starts watching one apply of lane (edge, stream, edgePartition); the receiver then
	// calls the ApplyObserver's Queued for each record it queues and Stored once.
	Apply(edge, stream string, edgePartition int) ApplyObserver
}

// ApplyObserver watches one apply.
type ApplyObserver interface {
	// Queued is called, in edge offset order with the lane locked, for each record the apply
	// hands to central partition partition; index counts the apply's records in that partition
	// from 0. Repeats of records central already has are not queued. e and its bytes stay
	// valid after the call and are never modified; keeping them keeps the chunk's decode buffer.
	Queued(e *storage.Entry, partition, index int)
	// Stored is called once, when every queued record has its answer, with the records stored
	// per central partition: parts[j].Offsets[i] is the central offset of that partition's
	// record of index i. A part is shorter than what was queued to it when a write failed
	// (the partition stopped; what it holds is the prefix). It runs on a storage committer
	// goroutine (or on the request's): hand the result off, do not process it there.
	Stored(parts []AppliedPart)
}

// AppliedPart is the records one apply stored in one central partition, in offset order.
type AppliedPart struct {
	Partition int
	// EdgeOffsets[i] is the edge offset of the partition's record of index i, Offsets[i] its
	// offset in the central partition.
	EdgeOffsets []int64
	Offsets     []int64
}

// report tells the observer what the apply stored. Every tracker of pa has finished
// (pa.remaining reached zero), so each tracker's central offsets are complete and no callback
// writes them any more.
func (pa *pendingApply) report() {
	if pa.observer == nil {
		return
	}
	var parts []AppliedPart
	for _, tr := range pa.trackers {
		if tr == nil || len(tr.central) == 0 {
			continue
		}
		n := len(tr.central)
		parts = append(parts, AppliedPart{Partition: tr.p, EdgeOffsets: tr.offsets[:n:n], Offsets: tr.central})
	}
	pa.observer.Stored(parts)
}
