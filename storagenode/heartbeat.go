package storagenode

import (
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// heartbeats publishes the node's heartbeat. It beats at once, so a
// restarted node is seen without waiting a full interval.
func (n *Node) heartbeats() {
	defer close(n.hbDone)
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		err := n.beat()
		switch {
		case err != nil && !failing:
			n.log.Warn("heartbeat failed; will keep trying", zap.Error(err))
		case err == nil && failing:
			n.log.Info("heartbeat recovered")
		}
		if err != nil {
			n.met.heartbeatErr.Inc()
		}
		failing = err != nil
		select {
		case <-n.hbStop:
			return
		case <-t.C:
		}
	}
}

func (n *Node) beat() error {
	st, err := n.eng.Stats()
	if err != nil {
		return errors.Wrap(err, "read engine stats")
	}
	n.met.diskBytes.Set(float64(st.DiskBytes))
	hb := &pb.Heartbeat{
		NodeId:      n.cfg.ID,
		Incarnation: n.eng.Incarnation(),
		UnixMs:      time.Now().UnixMilli(),
		DiskBytes:   st.DiskBytes,
	}
	n.heartbeatState(hb)
	data, err := proto.Marshal(hb)
	if err != nil {
		return errors.Wrap(err, "encode heartbeat")
	}
	return errors.Wrapf(n.nc.Publish(n.hbSubject, data), "publish on %s", n.hbSubject)
}

// heartbeatState fills the membership fields of a heartbeat.
func (n *Node) heartbeatState(hb *pb.Heartbeat) {
	hb.Epoch = n.epochOf()
	hb.State = n.ringState()
	hb.Keys = n.eng.Keys()
	n.met.keys.Set(float64(hb.Keys))
}
