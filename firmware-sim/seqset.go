package firmwaresim

import (
	"encoding/json"
	"fmt"
	"slices"
)

// seqSet is a set of sequence numbers (>= 1) kept as a contiguous prefix 1..through plus a sparse
// set above it. Readings are overwhelmingly acked and delivered in order, so the sparse part stays
// small and a run of millions of readings costs a few words per device.
type seqSet struct {
	through uint64              // 1..through are all present
	above   map[uint64]struct{} // members > through+1
}

// add inserts s and reports whether it was new.
func (s *seqSet) add(seq uint64) bool {
	if seq == 0 || s.has(seq) {
		return false
	}
	if seq != s.through+1 {
		if s.above == nil {
			s.above = make(map[uint64]struct{})
		}
		s.above[seq] = struct{}{}
		return true
	}
	s.through = seq
	for {
		if _, ok := s.above[s.through+1]; !ok {
			break
		}
		delete(s.above, s.through+1)
		s.through++
	}
	return true
}

func (s *seqSet) has(seq uint64) bool {
	if seq >= 1 && seq <= s.through {
		return true
	}
	_, ok := s.above[seq]
	return ok
}

func (s *seqSet) len() uint64 { return s.through + uint64(len(s.above)) }

// max is the highest member, 0 when empty.
func (s *seqSet) max() uint64 {
	m := s.through
	for k := range s.above {
		m = max(m, k)
	}
	return m
}

// ranges lists the members as sorted, non-overlapping, non-adjacent inclusive ranges.
func (s *seqSet) ranges() []SeqRange {
	var out []SeqRange
	if s.through > 0 {
		out = append(out, SeqRange{1, s.through})
	}
	rest := make([]uint64, 0, len(s.above))
	for k := range s.above {
		rest = append(rest, k)
	}
	slices.Sort(rest)
	for _, k := range rest {
		if n := len(out); n > 0 && out[n-1].Last+1 == k {
			out[n-1].Last = k
			continue
		}
		out = append(out, SeqRange{k, k})
	}
	return out
}

// SeqRange is an inclusive range of sequence numbers. In JSON it is a two-element array
// [first, last], which keeps manifests of long runs short.
type SeqRange struct {
	First, Last uint64
}

// MarshalJSON writes [first, last].
func (r SeqRange) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "[%d,%d]", r.First, r.Last), nil
}

// UnmarshalJSON reads [first, last].
func (r *SeqRange) UnmarshalJSON(b []byte) error {
	var pair []uint64
	if err := json.Unmarshal(b, &pair); err != nil {
		return fmt.Errorf("decode sequence range: %w", err)
	}
	if len(pair) != 2 || pair[0] == 0 || pair[0] > pair[1] {
		return fmt.Errorf("decode sequence range %s: want [first, last] with 1 <= first <= last", b)
	}
	r.First, r.Last = pair[0], pair[1]
	return nil
}

// missing lists the seqs in 1..upper that are not in the set, as sorted ranges.
func (s *seqSet) missing(upper uint64) []SeqRange {
	var out []SeqRange
	next := s.through + 1 // lowest seq not yet known to be present
	for _, r := range s.ranges() {
		if r.Last <= s.through {
			continue
		}
		if r.First > next {
			out = append(out, SeqRange{next, min(r.First-1, upper)})
		}
		next = r.Last + 1
		if next > upper {
			break
		}
	}
	if next <= upper {
		out = append(out, SeqRange{next, upper})
	}
	// Ranges clipped by upper may have become empty.
	out = slices.DeleteFunc(out, func(r SeqRange) bool { return r.First > r.Last || r.First > upper })
	return out
}
