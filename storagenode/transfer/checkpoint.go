package transfer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

const (
	checkpointPrefix = "xfer/"
	// progressEvery spaces progress messages.
	progressEvery = 250 * time.Millisecond
)

// checkpoint is the durable progress of one (migration, tenant, arc).
type checkpoint struct {
	HasAfter  bool   `json:"has_after,omitempty"`
	AfterHash uint64 `json:"after_hash,omitempty"`
	AfterKey  string `json:"after_key,omitempty"`
	// Source is the replica the position above is in.
	Source string `json:"source,omitempty"`
	// Keys counts keys pulled so far (across passes and restarts).
	Keys uint64 `json:"keys"`
	// VerifiedBy lists the source replicas this copy has caught up with.
	VerifiedBy []string `json:"verified_by,omitempty"`
	Verified   bool     `json:"verified,omitempty"`
}

// restart forgets the position in the source: the next pass is a full one.
func (ck *checkpoint) restart() { ck.HasAfter, ck.AfterHash, ck.AfterKey = false, 0, "" }

func checkpointName(migration string, mv membership.TenantMove) string {
	return fmt.Sprintf("%s%s/%s/%d-%d", checkpointPrefix, migration, mv.Tenant, mv.Arc.Start, mv.Arc.End)
}

func (m *Mover) loadCheckpoint(name string) (checkpoint, error) {
	var ck checkpoint
	v, found, err := m.cfg.Engine.GetMeta(name)
	if err != nil || !found {
		return ck, err
	}
	if err := json.Unmarshal(v, &ck); err != nil {
		// A corrupt checkpoint only costs a restart of its arc.
		m.log.Warn("unreadable transfer checkpoint; restarting its range", zap.String("checkpoint", name), zap.Error(err))
		return checkpoint{}, nil
	}
	return ck, nil
}

func (m *Mover) saveCheckpoint(name string, ck checkpoint) error {
	v, err := json.Marshal(ck)
	if err != nil {
		return errors.Wrap(err, "encode transfer checkpoint")
	}
	return m.cfg.Engine.PutMeta(name, v)
}

// progress publishes a target's transfer progress, rate limited.
type progress struct {
	m           *Mover
	migration   string
	transferred uint64
	total       uint64
	last        time.Time
}

func (p *progress) publish(ctx context.Context, done bool, failure error, force bool) {
	if !force && time.Since(p.last) < progressEvery {
		return
	}
	p.last = time.Now()
	msg := &pb.MigrationProgress{
		MigrationId: p.migration, NodeId: p.m.cfg.ID, KeysTransferred: p.transferred,
		KeysTotal: max(p.total, p.transferred), Done: done, UnixMs: p.last.UnixMilli(),
	}
	if failure != nil {
		msg.Error = failure.Error()
	}
	pctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := p.m.cfg.Ring.PublishProgress(pctx, msg); err != nil && ctx.Err() == nil {
		p.m.log.Debug("publish migration progress", zap.String("migration", p.migration), zap.Error(err))
	}
}
