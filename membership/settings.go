package membership

import (
	"time"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Settings are the cluster-wide inputs the bootstrap records in the ring
// log (pb.ClusterSettings): every coordinator and storage node reads them
// from its fold, so none can disagree with another.
type Settings struct {
	// VNodes is the number of ring points per storage node.
	VNodes int
	// HintMaxAge is how long an undelivered hint is kept.
	HintMaxAge time.Duration
	// TombstoneGrace is how long a tombstone is kept at least; never below
	// HintMaxAge, or a hint still queued could bring back a key whose
	// tombstone was collected.
	TombstoneGrace time.Duration
}

// The defaults, also what a ring log bootstrapped before the settings were
// recorded has.
const (
	DefaultHintMaxAge     = 3 * time.Hour
	DefaultTombstoneGrace = 240 * time.Hour
	MaxVNodes             = 4096
)

// DefaultSettings are the defaults of every setting.
func DefaultSettings() Settings {
	return Settings{VNodes: ring.DefaultVirtualNodes, HintMaxAge: DefaultHintMaxAge, TombstoneGrace: DefaultTombstoneGrace}
}

// WithDefaults fills the zero fields of s with the defaults.
func (s Settings) WithDefaults() Settings {
	d := DefaultSettings()
	if s.VNodes == 0 {
		s.VNodes = d.VNodes
	}
	if s.HintMaxAge == 0 {
		s.HintMaxAge = d.HintMaxAge
	}
	if s.TombstoneGrace == 0 {
		s.TombstoneGrace = d.TombstoneGrace
	}
	return s
}

// Validate reports the first setting that cannot work.
func (s Settings) Validate() error {
	switch {
	case s.VNodes < 1 || s.VNodes > MaxVNodes:
		return errors.Newf("virtual nodes must be between 1 and %d, got %d", MaxVNodes, s.VNodes)
	case s.HintMaxAge <= 0:
		return errors.Newf("hint max age must be positive, got %s", s.HintMaxAge)
	case s.TombstoneGrace < s.HintMaxAge:
		return errors.Newf("tombstone grace (%s) must not be below the hint max age (%s): a hint still queued could bring back a key whose tombstone was collected",
			s.TombstoneGrace, s.HintMaxAge)
	}
	return nil
}

// Proto is the wire form of s.
func (s Settings) Proto() *pb.ClusterSettings {
	return &pb.ClusterSettings{VirtualNodes: uint32(s.VNodes),
		HintMaxAgeMs: s.HintMaxAge.Milliseconds(), TombstoneGraceMs: s.TombstoneGrace.Milliseconds()}
}

// settingsFrom reads a bootstrap's settings; zero fields (and a bootstrap
// without settings) take the defaults.
func settingsFrom(p *pb.ClusterSettings) Settings {
	s := DefaultSettings()
	if v := p.GetVirtualNodes(); v > 0 {
		s.VNodes = int(v)
	}
	if v := p.GetHintMaxAgeMs(); v > 0 {
		s.HintMaxAge = time.Duration(v) * time.Millisecond
	}
	if v := p.GetTombstoneGraceMs(); v > 0 {
		s.TombstoneGrace = time.Duration(v) * time.Millisecond
	}
	return s
}

// Bootstrapped reports whether the ring log has bootstrapped the cluster,
// and so recorded its settings.
func (s *State) Bootstrapped() bool { return s.bootstrapped }

// CheckSettings compares a part's own settings with the ring log's, once
// the log has bootstrapped the cluster: a part configured otherwise must
// not start (it would place keys, or collect tombstones, unlike the rest).
// Zero fields of mine are not compared.
func (s *State) CheckSettings(part string, mine Settings) error {
	if !s.bootstrapped {
		return nil
	}
	log := s.Settings
	switch {
	case mine.VNodes != 0 && mine.VNodes != log.VNodes:
		return errors.Newf("%s: virtual nodes are %d here but %d in the ring log", part, mine.VNodes, log.VNodes)
	case mine.HintMaxAge != 0 && mine.HintMaxAge != log.HintMaxAge:
		return errors.Newf("%s: hint_max_age is %s here but %s in the ring log (the cluster's, set at bootstrap)",
			part, mine.HintMaxAge, log.HintMaxAge)
	case mine.TombstoneGrace != 0 && mine.TombstoneGrace != log.TombstoneGrace:
		return errors.Newf("%s: tombstone_grace is %s here but %s in the ring log (the cluster's, set at bootstrap)",
			part, mine.TombstoneGrace, log.TombstoneGrace)
	}
	return nil
}
