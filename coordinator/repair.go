package coordinator

import (
	"context"
	"sync"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// repairJob is a finished read whose slower replies may still be arriving.
type repairJob struct {
	tenant string
	key    string
	policy pb.ConflictPolicy
	epoch  uint64
	got    []readReply
	rest   *gather // owned by the job: closed when it is done
}

// repairer runs read repair off the request path: a bounded queue and a
// fixed worker pool. A full queue drops the job (counted); a request never
// waits for repair.
type repairer struct {
	s      *Service
	queue  chan repairJob
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

func newRepairer(s *Service, workers, size int) *repairer {
	r := &repairer{s: s, queue: make(chan repairJob, size)}
	s.cfg.Metrics.GetOrCreateGauge(`coordinator_repair_queue_size`, func() float64 { return float64(len(r.queue)) })
	for range workers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for job := range r.queue {
				r.run(job)
			}
		}()
	}
	return r
}

func (r *repairer) enqueue(job repairJob) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		job.rest.close()
		return
	}
	select {
	case r.queue <- job:
	default:
		job.rest.close()
		r.s.m.repairsDropped.Inc()
	}
}

// stop finishes queued jobs and ends the workers; idempotent.
func (r *repairer) stop() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// run waits for the remaining replies (each bounded by the replica
// timeout), merges everything, and sends the merged object to every replica
// that answered with something missing or older. Replicas that did not
// answer are left to hinted handoff and anti-entropy.
func (r *repairer) run(job repairJob) {
	for job.rest.left > 0 {
		rep, _ := job.rest.readReply(nil, nil) // bounded by the replica timeout
		job.got = append(job.got, rep)
	}
	job.rest.close()
	if _, ok := sameReplies(job.got); ok {
		return // every replica asked answered, all alike
	}
	p := dvvpb.PolicyFromProto(job.policy)
	merged := mergeReplies(job.got, p)
	if merged.Empty() {
		return
	}
	var req *pb.MergeRequest
	for _, rep := range job.got {
		if rep.err != nil || !dvv.Behind(rep.obj, merged, p) {
			continue
		}
		if req == nil {
			req = &pb.MergeRequest{TenantId: job.tenant, Key: job.key, Object: dvvpb.ObjectToProto(merged), Policy: job.policy, Epoch: job.epoch}
		}
		err := r.s.callNode(context.Background(), rep.node, bus.OpMerge, req, new(pb.MergeResponse))
		if err != nil {
			r.s.m.repairsFailed.Inc()
			r.s.log.Debug("read repair failed", zap.String("node", rep.node), zap.Error(err))
			continue
		}
		r.s.m.repairsOK.Inc()
	}
}
