package engine

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// FuzzDecodeDataKey: decoding any bytes never panics, and whatever decodes
// re-encodes to the same bytes, so a scan reports exactly the key it found.
func FuzzDecodeDataKey(f *testing.F) {
	f.Add(dataKey("tenant-1", 0x0102030405060708, "some/key\x00with nul"))
	f.Add(dataKey("a", keyspace.Hash("a", "k"), "k"))
	f.Add(dataKey("", 0, ""))
	f.Add([]byte(nil))
	f.Add([]byte{prefixData})
	f.Add([]byte("dabc\x00123"))                               // hash shorter than 8 bytes
	f.Add([]byte("dabc\x0012345678"))                          // empty key
	f.Add([]byte("dabc"))                                      // no terminator
	f.Add(metaIncarnation)                                     // a metadata key
	f.Add([]byte("d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")) // empty tenant, zero hash, key "\x00\x00"
	f.Fuzz(func(t *testing.T, k []byte) {
		tenant, h, key, err := decodeDataKey(k)
		if err != nil {
			if tenant != "" || h != 0 || key != "" {
				t.Fatalf("decodeDataKey(%q) failed (%v) but returned parts", k, err)
			}
			return
		}
		if got := dataKey(tenant, h, key); !bytes.Equal(got, k) {
			t.Fatalf("decodeDataKey(%q) = (%q, %#x, %q), which encodes to %q", k, tenant, h, key, got)
		}
		if !bytes.HasPrefix(k, []byte{prefixData}) || len(k) < 1+len(tenant)+1+hashLen {
			t.Fatalf("decodeDataKey accepted %q", k)
		}
		if binary.BigEndian.Uint64(k[1+len(tenant)+1:]) != h {
			t.Fatalf("decodeDataKey(%q) hash %#x is not the stored one", k, h)
		}
	})
}

// FuzzStoredObject stores arbitrary bytes as the object of a key (what a
// corrupted or foreign-written value looks like) and reads and writes over
// it through the engine. Nothing panics; a value that is not an object is
// reported as INTERNAL (the store is damaged, not the request) and is left
// alone by writes; a value that is an object reads back as decoded and takes
// a new write on top.
func FuzzStoredObject(f *testing.F) {
	valid := &pb.Object{
		Clock: []*pb.ClockEntry{{Actor: "n1", Counter: 2}, {Actor: "n2", Counter: 1}},
		Siblings: []*pb.StoredSibling{
			{Value: []byte("a"), Dot: &pb.Dot{Actor: "n1", Counter: 2}, TimestampMs: 5},
			{Tombstone: true, Dot: &pb.Dot{Actor: "n2", Counter: 1}, TimestampMs: 6},
		},
	}
	// Malformed but decodable: duplicate dots and a sibling outside the clock.
	odd := &pb.Object{
		Clock: []*pb.ClockEntry{{Actor: "n1", Counter: 1}},
		Siblings: []*pb.StoredSibling{
			{Value: []byte("x"), Dot: &pb.Dot{Actor: "n1", Counter: 1}},
			{Value: []byte("y"), Dot: &pb.Dot{Actor: "n1", Counter: 1}},
			{Value: []byte("z"), Dot: &pb.Dot{Actor: "n9", Counter: 9}},
			{Value: []byte("no dot")},
		},
	}
	for _, o := range []*pb.Object{{}, valid, odd} {
		b, err := proto.Marshal(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // 4 GiB length
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 0xff})       // invalid UTF-8 actor
	f.Add([]byte("not a protobuf at all"))

	e, err := Open(f.TempDir(), Options{Sync: false, CacheBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := e.Close(); err != nil {
			f.Error(err)
		}
	})
	const tenant, key = "fuzz", "k"
	k := dataKey(tenant, keyspace.Hash(tenant, key), key)

	f.Fuzz(func(t *testing.T, stored []byte) {
		if err := e.db.Set(k, stored, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		var want pb.Object
		decodable := proto.Unmarshal(stored, &want) == nil

		got, found, err := e.Get(tenant, key)
		if !decodable {
			if err == nil || status.CodeOf(err) != pb.ErrorCode_INTERNAL {
				t.Fatalf("corrupt object read as (%+v, %v, %v), want an INTERNAL error", got, found, err)
			}
			_, err := e.Apply(tenant, key, nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
			if err == nil || status.CodeOf(err) != pb.ErrorCode_INTERNAL {
				t.Fatalf("write over a corrupt object gave %v, want an INTERNAL error", err)
			}
			v, closer, err := e.db.Get(k)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = closer.Close() }()
			if !bytes.Equal(v, stored) {
				t.Fatalf("a failed write changed the stored value")
			}
			return
		}
		if err != nil || !found {
			t.Fatalf("decodable object read as (%v, %v)", found, err)
		}
		if !dvv.Equal(got, dvvpb.ObjectFromProto(&want)) {
			t.Fatalf("read %+v, stored %v", got, &want)
		}
		next, err := e.Apply(tenant, key, got.Clock, []byte("v"), false, dvv.Siblings, 0, 2, nil)
		if err != nil {
			t.Fatalf("write over a decodable object: %v", err)
		}
		mine := dvv.Dot{Actor: e.Incarnation(), Counter: got.Clock[e.Incarnation()] + 1}
		if !next.Clock.Covers(mine) || !next.Clock.Descends(got.Clock) {
			t.Fatalf("write minted clock %v over %v", next.Clock, got.Clock)
		}
		if live := next.Live(); len(live) != 1 || live[0].Dot != mine {
			// The write's context covers every sibling with a real dot; only
			// siblings the stored clock never covered can survive it.
			for _, s := range next.Siblings {
				if s.Dot != mine && got.Clock.Covers(s.Dot) {
					t.Fatalf("write with the full context kept sibling %+v", s)
				}
			}
		}
	})
}
