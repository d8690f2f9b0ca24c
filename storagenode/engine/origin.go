package engine

import (
	"bytes"

	"github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Origin records: what a replica remembers of each write with an
// idempotency key it minted or received fresh (see pb.OriginRecord), for as
// long as idempotency records live. A sibling carries its origin only while
// it is held; once a later write supersedes it, the record is what tells a
// retry of that write that it happened, so the retry is answered instead of
// minting the value a second time. Records are keyed by tenant and origin
// (an origin already names one tenant, key and payload), written in the
// same batch as the object, and swept by age (SweepOrigins).

// originKey is 'o' | tenant | 0x00 | origin.
func originKey(tenant string, origin []byte) []byte {
	b := make([]byte, 0, 2+len(tenant)+len(origin))
	b = append(b, prefixOrigin)
	b = append(b, tenant...)
	b = append(b, tenantTerminator)
	return append(b, origin...)
}

// originSpan covers every origin record.
func originSpan() (start, end []byte) { return []byte{prefixOrigin}, []byte{prefixOrigin + 1} }

func originEntry(tenant string, origin []byte, dot dvv.Dot, clock dvv.VV, nowMs int64) (record, error) {
	v, err := proto.Marshal(&pb.OriginRecord{
		Dot:         &pb.Dot{Actor: dot.Actor, Counter: dot.Counter},
		Clock:       dvvpb.ClockToProto(clock),
		TimestampMs: nowMs,
	})
	if err != nil {
		return record{}, errors.Wrap(err, "engine: encode origin record")
	}
	return record{k: originKey(tenant, origin), v: v}, nil
}

// gainedOrigins are the origin records for the siblings with an origin that
// obj brings and cur does not hold yet, with obj's clock as their context.
func gainedOrigins(tenant string, cur, obj dvv.Object, nowMs int64) ([]record, error) {
	var out []record
	for _, s := range obj.Siblings {
		if len(s.Origin) == 0 || cur.HasOrigin(s.Origin) {
			continue
		}
		r, err := originEntry(tenant, s.Origin, s.Dot, obj.Clock, nowMs)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// originRecord reads the record of origin in tenant; nil when there is none.
// The caller holds the close guard.
func (e *Engine) originRecord(tenant string, origin []byte) (*pb.OriginRecord, error) {
	v, closer, err := e.db.Get(originKey(tenant, origin))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, errors.Wrap(err, "engine: read origin record")
	}
	rec := new(pb.OriginRecord)
	err = proto.Unmarshal(v, rec)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, errors.Wrapf(err, "engine: origin record of tenant %q", tenant)
	}
	return rec, nil
}

// OriginRecord returns this replica's record of origin in tenant, nil when
// it has none.
func (e *Engine) OriginRecord(tenant string, origin []byte) (*pb.OriginRecord, error) {
	if err := validateTenant(tenant); err != nil {
		return nil, err
	}
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	return e.originRecord(tenant, origin)
}

// Origins lists every origin record of tenant: origin (as a string of its
// bytes) to the dot the write got here. Checkers use it to prove that no
// write was minted twice.
func (e *Engine) Origins(tenant string) (map[string]dvv.Dot, error) {
	if err := validateTenant(tenant); err != nil {
		return nil, err
	}
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	lo := originKey(tenant, nil)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, errors.Wrap(err, "engine: open origin iterator")
	}
	out := map[string]dvv.Dot{}
	var rec pb.OriginRecord
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			rec.Reset()
			err = proto.Unmarshal(v, &rec)
		}
		if err != nil {
			return nil, errors.CombineErrors(errors.Wrap(err, "engine: origin record"), it.Close())
		}
		out[string(bytes.TrimPrefix(it.Key(), lo))] = dvv.Dot{Actor: rec.GetDot().GetActor(), Counter: rec.GetDot().GetCounter()}
	}
	return out, closeIter(it)
}

// SweepOrigins examines up to limit origin records in key order, starting
// after the key after (nil: from the first), and deletes those stamped
// before beforeMs. It returns how many it deleted and where the next call
// resumes (nil once every record was examined), so one call's work and
// batch stay bounded however many records there are. Records are only a
// retry's memory: deleting one early costs nothing unless a retry of that
// very write arrives after its idempotency record expired, and such a retry
// is a new write anyway.
func (e *Engine) SweepOrigins(beforeMs int64, after []byte, limit int) (int, []byte, error) {
	if err := e.acquire(); err != nil {
		return 0, nil, err
	}
	defer e.mu.RUnlock()
	lo, hi := originSpan()
	if after != nil {
		lo = append(bytes.Clone(after), 0)
	}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, nil, errors.Wrap(err, "engine: open origin sweep")
	}
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	var (
		n, seen int
		next    []byte
		rec     pb.OriginRecord
	)
	for ok := it.First(); ok && seen < limit; ok = it.Next() {
		seen++
		if seen == limit {
			// Where the next call resumes (strictly after this key).
			next = bytes.Clone(it.Key())
		}
		v, err := it.ValueAndErr()
		if err == nil {
			rec.Reset()
			err = proto.Unmarshal(v, &rec)
		}
		if err != nil {
			return 0, nil, errors.CombineErrors(errors.Wrap(err, "engine: origin sweep"), it.Close())
		}
		if rec.GetTimestampMs() >= beforeMs {
			continue
		}
		if err := b.Delete(bytes.Clone(it.Key()), nil); err != nil {
			return 0, nil, errors.CombineErrors(errors.Wrap(err, "engine: stage origin sweep"), it.Close())
		}
		n++
	}
	if err := closeIter(it); err != nil {
		return 0, nil, err
	}
	if n > 0 {
		// Losing a sweep in a crash only leaves records for the next one.
		if err := b.Commit(pebble.NoSync); err != nil {
			return 0, nil, errors.Wrap(err, "engine: commit origin sweep")
		}
	}
	return n, next, nil
}
