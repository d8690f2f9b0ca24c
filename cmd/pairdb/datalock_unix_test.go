//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDataDirectoryLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := lockDataDir(dir)
	require.NoError(t, err)
	_, err = lockDataDir(dir)
	require.ErrorContains(t, err, fmt.Sprintf("another pairdb is using %s (pid %d)", dir, os.Getpid()))
	first.release()
	again, err := lockDataDir(dir)
	require.NoError(t, err, "free again after release")
	again.release()
}
