package bench

import (
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/cockroachdb/errors"
)

// ZipfianConstant is YCSB's default skew (theta).
const ZipfianConstant = 0.99

// Zipfian draws integers in [0, n) with P(i) ∝ 1/(i+1)^theta, by the method
// of Gray et al., "Quickly Generating Billion-Record Synthetic Databases"
// (SIGMOD 1994), as YCSB's ZipfianGenerator does. Item 0 is the most
// popular. The item count may grow between draws (NextN); zeta is then
// extended incrementally.
//
// A Zipfian is not safe for concurrent use; copy it per goroutine (a copy is
// independent and keeps the precomputed zeta).
type Zipfian struct {
	items      uint64
	theta      float64
	alpha      float64
	zetan      float64
	zeta2theta float64
	eta        float64
}

// NewZipfian prepares a generator over n items; computing zeta costs O(n).
func NewZipfian(n uint64, theta float64) Zipfian {
	return newZipfianWithZeta(n, theta, zeta(0, n, theta, 0))
}

func newZipfianWithZeta(n uint64, theta, zetan float64) Zipfian {
	z := Zipfian{items: n, theta: theta, alpha: 1 / (1 - theta), zetan: zetan, zeta2theta: zeta(0, 2, theta, 0)}
	z.eta = z.etaFor(n)
	return z
}

// zeta extends sum_{i=from+1..to} 1/i^theta onto initial.
func zeta(from, to uint64, theta, initial float64) float64 {
	sum := initial
	for i := from; i < to; i++ {
		sum += 1 / math.Pow(float64(i+1), theta)
	}
	return sum
}

func (z *Zipfian) etaFor(n uint64) float64 {
	return (1 - math.Pow(2/float64(n), 1-z.theta)) / (1 - z.zeta2theta/z.zetan)
}

// Next draws from the current item count.
func (z *Zipfian) Next(r *rand.Rand) uint64 { return z.NextN(r, z.items) }

// NextN draws from [0, n); a larger n than before extends zeta (YCSB does
// the same), a smaller one recomputes it.
func (z *Zipfian) NextN(r *rand.Rand, n uint64) uint64 {
	if n != z.items {
		if n > z.items {
			z.zetan = zeta(z.items, n, z.theta, z.zetan)
		} else {
			z.zetan = zeta(0, n, z.theta, 0)
		}
		z.items = n
		z.eta = z.etaFor(n)
	}
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < 1+math.Pow(0.5, z.theta) {
		return min(1, n-1)
	}
	v := uint64(float64(n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	return min(v, n-1)
}

// Scrambled zipfian constants, from YCSB's ScrambledZipfianGenerator: a
// zipfian over ten billion items with zeta precomputed, hashed onto the
// record range so the popular keys are scattered rather than clustered.
const (
	scrambledItems = 10_000_000_000
	scrambledZetan = 26.46902820178302
)

// KeyChooser picks the index of the record an operation touches. It is
// not safe for concurrent use; each worker makes its own.
type KeyChooser interface {
	Next(r *rand.Rand) uint64
}

// Uniform picks uniformly in [0, N).
type Uniform struct{ N uint64 }

// Next draws one index.
func (u Uniform) Next(r *rand.Rand) uint64 { return r.Uint64N(u.N) }

// ScrambledZipfian is YCSB's default request distribution: zipfian with
// theta 0.99 whose item ranks are scattered over [0, n) by FNV-1a.
type ScrambledZipfian struct {
	z Zipfian
	n uint64
}

// NewScrambledZipfian picks among n records.
func NewScrambledZipfian(n uint64) *ScrambledZipfian {
	return &ScrambledZipfian{z: newZipfianWithZeta(scrambledItems, ZipfianConstant, scrambledZetan), n: n}
}

// Next draws one index.
func (s *ScrambledZipfian) Next(r *rand.Rand) uint64 { return fnv64(s.z.Next(r)) % s.n }

// fnv64 is YCSB's FNV-1a hash of the eight bytes of v, low byte first.
func fnv64(v uint64) uint64 {
	h := uint64(0xCBF29CE484222325)
	for range 8 {
		h ^= v & 0xff
		h *= 1099511628211
		v >>= 8
	}
	return h
}

// Latest is YCSB's skewed-latest distribution (workload D): the most
// recently inserted records are the most popular. It draws max-1-z where z
// is zipfian over the current record count, read from count at each draw.
type Latest struct {
	z     Zipfian
	count func() uint64
}

// NewLatest reads the record count from count (it must be at least 1); z is
// a zipfian prepared for the initial count (copied, so workers can share
// one precomputed value).
func NewLatest(z Zipfian, count func() uint64) *Latest { return &Latest{z: z, count: count} }

// Next draws one index.
func (l *Latest) Next(r *rand.Rand) uint64 {
	n := max(l.count(), 1)
	return n - 1 - l.z.NextN(r, n)
}

// Distribution names a request distribution.
type Distribution string

// Request distributions.
const (
	DistZipfian Distribution = "zipfian"
	DistUniform Distribution = "uniform"
)

// ParseDistribution validates a distribution name.
func ParseDistribution(s string) (Distribution, error) {
	switch d := Distribution(s); d {
	case DistZipfian, DistUniform:
		return d, nil
	}
	return "", errors.Newf("unknown distribution %q (want zipfian or uniform)", s)
}

// KeyFormat renders record indexes as fixed-size keys: "k" followed by the
// zero-padded decimal index, Size bytes in all.
type KeyFormat struct{ Size int }

// maxKeySize bounds --key-size (PairDB allows 1024; this is plenty).
const maxKeySize = 1024

// Validate checks that indexes below n fit.
func (f KeyFormat) Validate(n uint64) error {
	if f.Size < 2 || f.Size > maxKeySize {
		return errors.Newf("key size %d is outside 2–%d bytes", f.Size, maxKeySize)
	}
	if digits := len(strconv.FormatUint(n, 10)); digits > f.Size-1 {
		return errors.Newf("key size %d cannot number %d records (needs %d bytes)", f.Size, n, digits+1)
	}
	return nil
}

// Key renders index i.
func (f KeyFormat) Key(i uint64) string {
	buf := make([]byte, 0, f.Size)
	buf = append(buf, 'k')
	var num [20]byte
	d := strconv.AppendUint(num[:0], i, 10)
	for range f.Size - 1 - len(d) {
		buf = append(buf, '0')
	}
	return string(append(buf, d...))
}
