package engine

import (
	"github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"
)

// Metadata lives in the 'm' namespace, apart from data. Names under
// metaUserPrefix belong to callers (transfer checkpoints); the engine's own
// names (the incarnation) cannot collide with them.
const metaUserPrefix = "u/"

func metaKey(name string) []byte {
	return append([]byte{prefixMeta}, metaUserPrefix+name...)
}

// PutMeta durably stores value under name (always fsynced, whatever
// Options.Sync says: callers use it for checkpoints they resume from).
func (e *Engine) PutMeta(name string, value []byte) error {
	if err := e.acquire(); err != nil {
		return err
	}
	defer e.mu.RUnlock()
	if err := e.db.Set(metaKey(name), value, pebble.Sync); err != nil {
		return errors.Wrapf(err, "engine: store metadata %q", name)
	}
	return nil
}

// GetMeta reads the value stored under name; found is false when none is.
func (e *Engine) GetMeta(name string) (value []byte, found bool, err error) {
	if err := e.acquire(); err != nil {
		return nil, false, err
	}
	defer e.mu.RUnlock()
	v, closer, err := e.db.Get(metaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, errors.Wrapf(err, "engine: read metadata %q", name)
	}
	out := append([]byte(nil), v...)
	return out, true, errors.Wrap(closer.Close(), "engine: release metadata read")
}

// DeleteMetaPrefix durably removes every name starting with prefix.
func (e *Engine) DeleteMetaPrefix(prefix string) error {
	if err := e.acquire(); err != nil {
		return err
	}
	defer e.mu.RUnlock()
	lo := metaKey(prefix)
	if err := e.db.DeleteRange(lo, prefixEnd(lo), pebble.Sync); err != nil {
		return errors.Wrapf(err, "engine: delete metadata under %q", prefix)
	}
	return nil
}

// prefixEnd is the first key after every key starting with p (p is never
// all 0xff here: it starts with prefixMeta).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
