package coordinator

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"slices"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// hashDomain versions the canonical encoding. Changing the encoding must
// change this tag, so records written by an older release turn into
// conflicts only by intent, never by accident.
const hashDomain = "pairdb.idempotency.request.v1" // unchanged since it moved here from jetstream/idempotency

// requestHash fingerprints a write for idempotency: SHA-256 over a
// length-prefixed canonical encoding of the operation, the key, the value,
// the tombstone flag and the causal context. Every variable-length field is
// prefixed with its length, so no two distinct requests share an encoding
// ("ab"+"c" vs "a"+"bc"), and the clock entries are sorted by (actor,
// counter) because a context is a set: clients may send it in any order.
//
// The consistency level is deliberately not part of the hash. A client that
// times out at ALL and retries the same write at QUORUM is retrying the same
// write: the stored object would be identical, only how many acks the client
// waited for differs. Including the level would turn that retry into
// IDEMPOTENCY_KEY_CONFLICT, or, worse, into a second application of the
// write if the key were reused.
//
// The clock slice is not modified.
func requestHash(op string, key string, value []byte, tombstone bool, clock []*pb.ClockEntry) []byte {
	h := sha256.New()
	writeBytes(h, []byte(hashDomain))
	writeBytes(h, []byte(op))
	writeBytes(h, []byte(key))
	writeBytes(h, value)
	if tombstone {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	sorted := slices.Clone(clock)
	slices.SortFunc(sorted, func(a, b *pb.ClockEntry) int {
		if c := cmp.Compare(a.GetActor(), b.GetActor()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetCounter(), b.GetCounter())
	})
	writeUint(h, uint64(len(sorted)))
	for _, e := range sorted {
		writeBytes(h, []byte(e.GetActor()))
		writeUint(h, e.GetCounter())
	}
	return h.Sum(nil)
}

func writeUint(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func writeBytes(h hash.Hash, p []byte) {
	writeUint(h, uint64(len(p)))
	h.Write(p)
}
