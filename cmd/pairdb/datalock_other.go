//go:build !unix

package main

// dataLock does nothing where flock is missing: Pebble's own lock still
// refuses a second process, only later and less clearly.
type dataLock struct{}

func lockDataDir(string) (*dataLock, error) { return &dataLock{}, nil }

func (*dataLock) release() {}
