package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records latencies in log-linear buckets, as HdrHistogram does:
// values below 2·subBuckets nanoseconds are exact, and above that every
// power of two is split into subBuckets equal buckets, so a reported value
// is within 1/subBuckets (0.8%) of the true one. Min, max, count and sum are
// exact.
//
// A Histogram is not safe for concurrent use: each worker records into its
// own and the results are merged.
type Histogram struct {
	counts []uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits
	// maxTrackable caps recorded values (about 73 minutes); longer ones are
	// recorded as this.
	maxTrackable = uint64(1)<<42 - 1
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, bucketIndex(maxTrackable)+1), min: math.MaxUint64}
}

// bucketIndex maps v to its bucket: with k = max(0, bitlen(v)-subBucketBits-1),
// the bucket is k·subBuckets + v>>k, contiguous across powers of two.
func bucketIndex(v uint64) int {
	k := max(0, bits.Len64(v)-subBucketBits-1)
	return k*subBuckets + int(v>>k)
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width uint64) {
	if i < 2*subBuckets {
		return uint64(i), 1
	}
	k := i/subBuckets - 1
	return uint64(i-k*subBuckets) << k, uint64(1) << k
}

// Record adds one latency; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	v = min(v, maxTrackable)
	h.counts[bucketIndex(v)]++
	h.n++
	h.sum += v
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max is the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average recorded value (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Quantile returns the value at quantile q in [0, 1]: the highest value of
// the bucket holding the ⌈q·n⌉-th smallest value, capped at Max. It is 0
// when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			return time.Duration(min(max(low+width-1, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
