package storagenode

import (
	"time"

	"go.uber.org/zap"
)

// Origin records (engine/origin.go) are swept by age: every
// originSweepInterval the node walks them in pages of originSweepPage and
// deletes those older than OriginTTL, yielding between pages so client
// traffic is not starved.
const (
	originSweepInterval = 10 * time.Minute
	originSweepPage     = 4096
	originSweepPause    = 10 * time.Millisecond
)

// originSweeper is one goroutine owned by the Node, stopped by Stop.
type originSweeper struct {
	n    *Node
	stop chan struct{}
	done chan struct{}
}

func (n *Node) startOriginSweeper() {
	s := &originSweeper{n: n, stop: make(chan struct{}), done: make(chan struct{})}
	n.origins = s
	go s.run()
}

func (s *originSweeper) halt() {
	close(s.stop)
	<-s.done
}

func (s *originSweeper) run() {
	defer close(s.done)
	t := time.NewTicker(originSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.sweep()
	}
}

// sweep makes one pass over every origin record.
func (s *originSweeper) sweep() {
	n := s.n
	before := time.Now().Add(-n.cfg.OriginTTL).UnixMilli()
	var (
		after []byte
		total int
	)
	for {
		deleted, next, err := n.eng.SweepOrigins(before, after, originSweepPage)
		total += deleted
		if err != nil {
			n.log.Warn("origin record sweep failed; the next one retries", zap.Error(err))
			return
		}
		if next == nil {
			break
		}
		after = next
		select {
		case <-s.stop:
			return
		case <-time.After(originSweepPause):
		}
	}
	if total > 0 {
		n.met.originsSwept.Add(total)
		n.log.Debug("swept expired origin records", zap.Int("deleted", total))
	}
}
