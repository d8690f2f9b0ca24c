package coordinator

import (
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Causal contexts travel to clients sealed (package causal): every answer
// that carries a version vector carries its token in `context`, and a write
// is accepted only with a token this cluster sealed for the same tenant and
// key. The readable `vector_clock` is for people; a write may repeat it
// beside the token, never send it alone.

// sealContext is the token of clock for (tenant, key).
func (s *Service) sealContext(tenant, key string, clock []*pb.ClockEntry) []byte {
	return s.cfg.Contexts.Seal(tenant, key, dvvpb.ClockFromProto(clock))
}

// openContext returns the clock a write's token carries: INVALID_ARGUMENT
// for a token the cluster did not seal for this tenant and key, or a
// readable vector_clock that is not the token's.
func (s *Service) openContext(tenant, key string, token []byte, readable []*pb.ClockEntry) (dvv.VV, error) {
	clock, err := s.cfg.Contexts.Open(tenant, key, token)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err,
			"bad context: pass back the `context` of a get, put or delete of this key exactly as it came")
	}
	if len(readable) > 0 {
		if len(token) == 0 {
			return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"vector_clock is read-only: send the `context` that came with it (the token a get, put or delete answers)")
		}
		if !dvv.VV(clock).Equal(dvvpb.ClockFromProto(readable)) {
			return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "vector_clock does not match context; send context alone")
		}
	}
	// Sealed clocks come from replicas' objects, so this holds; checked
	// anyway, since what leaves here is minted from.
	if err := dvv.ValidateClock(clock); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad context")
	}
	return clock, nil
}
