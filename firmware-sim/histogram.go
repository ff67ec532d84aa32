package firmwaresim

import (
	"math/bits"
	"time"
)

// histogram records durations in log-linear buckets (like HdrHistogram): 32 linear sub-buckets per
// power of two of microseconds, so a percentile is within about 3% of the true value while memory
// stays fixed however many readings a run produces. Max is kept exactly.
//
// It is not safe for concurrent use; owners lock around it.
type histogram struct {
	counts [64 * subBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	subBucketBits = 5
	subBuckets    = 1 << subBucketBits
)

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d.Microseconds()))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// bucketOf maps v to a bucket index: values below subBuckets get their own bucket; above that the
// bucket is (power of two, top subBucketBits bits below the leading one).
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - 1 - subBucketBits // how far v's top bits are shifted
	mantissa := v >> uint(exp)               // in [subBuckets, 2*subBuckets)
	return (exp+1)*subBuckets + int(mantissa-subBuckets)
}

// bucketUpper is the largest value that maps to bucket i, so quantiles never understate latency.
func bucketUpper(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	exp := i/subBuckets - 1
	mantissa := uint64(i%subBuckets + subBuckets)
	return (mantissa+1)<<uint(exp) - 1
}

// quantile returns the q-quantile (0 < q <= 1), capped at the exact maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			d := time.Duration(bucketUpper(i)) * time.Microsecond
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}

// LatencySummary is the p50, p99 and maximum of a set of latencies, and how many were measured.
type LatencySummary struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

func (h *histogram) summary() LatencySummary {
	return LatencySummary{Count: h.n, P50: h.quantile(0.50), P99: h.quantile(0.99), Max: h.max}
}
