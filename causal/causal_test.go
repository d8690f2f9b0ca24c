package causal_test

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/causal"
)

func sealer(t testing.TB, fill byte) *causal.Sealer {
	t.Helper()
	s, err := causal.NewSealer(bytes.Repeat([]byte{fill}, causal.KeyBytes), 1)
	require.NoError(t, err)
	return s
}

func TestSealOpenRoundTrip(t *testing.T) {
	s := sealer(t, 7)
	clock := map[string]uint64{"a1b2": 3, "ffff": 1 << 40, "0000": 1}
	tok := s.Seal("acme", "cart", clock)
	got, err := s.Open("acme", "cart", tok)
	require.NoError(t, err)
	require.Equal(t, clock, got)
	require.Equal(t, tok, s.Seal("acme", "cart", got), "sealing is deterministic")

	require.Nil(t, s.Seal("acme", "cart", nil), "an empty clock is no context")
	got, err = s.Open("acme", "cart", nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestOpenRefusesWhatTheClusterDidNotIssue(t *testing.T) {
	s := sealer(t, 7)
	tok := s.Seal("acme", "cart", map[string]uint64{"a1b2": 3})
	for name, tc := range map[string]struct {
		tenant, key string
		tok         []byte
		by          *causal.Sealer
	}{
		"other tenant":    {"other", "cart", tok, s},
		"other key":       {"acme", "cart2", tok, s},
		"other cluster":   {"acme", "cart", tok, sealer(t, 8)},
		"truncated":       {"acme", "cart", tok[:len(tok)-1], s},
		"too short":       {"acme", "cart", tok[:3], s},
		"made up":         {"acme", "cart", []byte("hello, this is a context of my own"), s},
		"oversized":       {"acme", "cart", make([]byte, causal.MaxTokenBytes+1), s},
		"bigger counter":  {"acme", "cart", append(bytes.Clone(tok[:len(tok)-17]), append([]byte{0xff}, tok[len(tok)-16:]...)...), s},
		"another key id":  {"acme", "cart", append([]byte{tok[0], 9}, tok[2:]...), s},
		"another version": {"acme", "cart", append([]byte{9}, tok[1:]...), s},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.by.Open(tc.tenant, tc.key, tc.tok)
			require.True(t, errors.Is(err, causal.ErrInvalid), "err %v", err)
		})
	}
	// Every single-bit flip is caught.
	for i := range tok {
		for bit := range 8 {
			bad := bytes.Clone(tok)
			bad[i] ^= 1 << bit
			_, err := s.Open("acme", "cart", bad)
			require.True(t, errors.Is(err, causal.ErrInvalid), "byte %d bit %d", i, bit)
		}
	}
}

func TestNewSealerNeedsAFullKey(t *testing.T) {
	_, err := causal.NewSealer([]byte("short"), 1)
	require.Error(t, err)
}

func FuzzOpen(f *testing.F) {
	s := sealer(f, 7)
	f.Add(s.Seal("t", "k", map[string]uint64{"a": 1}))
	f.Add([]byte{1, 1, 0})
	f.Fuzz(func(t *testing.T, tok []byte) {
		clock, err := s.Open("t", "k", tok)
		if err != nil {
			require.True(t, errors.Is(err, causal.ErrInvalid))
			return
		}
		// Whatever opens was sealed here: sealing it again gives it back.
		if len(tok) > 0 {
			require.Equal(t, tok, s.Seal("t", "k", clock))
		}
	})
}
