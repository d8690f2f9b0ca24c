//go:build unix

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/cockroachdb/errors"
)

// lockFileName is the file in a data directory that a running pairdb holds
// locked, with its pid inside.
const lockFileName = "pairdb.lock"

// dataLock is an exclusive lock on a data directory, held until release or
// the process's end (the kernel drops a flock with its holder, even after
// SIGKILL, so a crash never leaves a stale lock behind).
type dataLock struct{ f *os.File }

// lockDataDir creates dir if needed and locks it for this process. It runs
// before anything else opens the directory: without it a second `pairdb dev`
// on the same directory got as far as starting an embedded NATS server on
// the first one's JetStream files before Pebble refused with "resource
// temporarily unavailable".
func lockDataDir(dir string) (*dataLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, errors.Wrapf(err, "create the data directory %s", dir)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, errors.Wrapf(err, "open %s", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid := string(bytes.TrimSpace(b)); pid != "" {
				holder = " (pid " + pid + ")"
			}
		}
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errors.WithSecondaryError(errors.Newf("another pairdb is using %s%s; stop it, or give this one another --data", dir, holder), err)
		}
		return nil, errors.Wrapf(err, "lock %s", path)
	}
	// The pid is for the message above; the lock itself is the flock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataLock{f: f}, nil
}

// release unlocks the directory. The file stays: removing it could unlink a
// file another process has just opened and locked.
func (l *dataLock) release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
}
