package dvv

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	good := Object{Siblings: []Sibling{{Value: []byte("v"), Dot: Dot{"a", 3}}}, Clock: VV{"a": 3, "b": 7}}
	require.NoError(t, Validate(good))
	many := VV{}
	for i := range MaxClockEntries + 1 {
		many[strings.Repeat("x", 1+i%8)+string(rune('a'+i%26))+string(rune(i))] = 1
	}
	for name, o := range map[string]Object{
		"no siblings":          {Clock: VV{"a": 1}},
		"empty":                {},
		"sibling outside":      {Siblings: []Sibling{{Dot: Dot{"a", 4}}}, Clock: VV{"a": 3}},
		"zero counter":         {Siblings: []Sibling{{Dot: Dot{"a", 0}}}, Clock: VV{"a": 0}},
		"counter past the top": {Siblings: []Sibling{{Dot: Dot{"a", MaxCounter + 1}}}, Clock: VV{"a": MaxCounter + 1}},
		"wrapping counter":     {Siblings: []Sibling{{Tombstone: true, Dot: Dot{"a", 1}}}, Clock: VV{"a": 1, "b": 1<<64 - 1}},
		"no actor":             {Siblings: []Sibling{{Dot: Dot{"", 1}}}, Clock: VV{"": 1}},
		"long actor":           {Siblings: []Sibling{{Dot: Dot{strings.Repeat("a", MaxActorBytes+1), 1}}}, Clock: VV{strings.Repeat("a", MaxActorBytes+1): 1}},
		"tombstone with value": {Siblings: []Sibling{{Tombstone: true, Value: []byte("x"), Dot: Dot{"a", 1}}}, Clock: VV{"a": 1}},
		"dot twice":            {Siblings: []Sibling{{Value: []byte("x"), Dot: Dot{"a", 1}}, {Value: []byte("y"), Dot: Dot{"a", 1}}}, Clock: VV{"a": 1}},
		"too many actors":      {Siblings: []Sibling{{Dot: Dot{"a", 1}}}, Clock: many.Join(VV{"a": 1})},
	} {
		require.Error(t, Validate(o), name)
	}
	require.NoError(t, ValidateClock(nil))
	require.Error(t, ValidateClock(VV{"a": MaxCounter + 1}))
}

// Update never wraps on a validated object and context: the counter it
// mints is at most MaxCounter+1, far below the top.
func TestUpdateAtTheCounterBound(t *testing.T) {
	o := Object{Siblings: []Sibling{{Value: []byte("v"), Dot: Dot{"a", MaxCounter}}}, Clock: VV{"a": MaxCounter}}
	require.NoError(t, Validate(o))
	next := Update(o, o.Clock, "a", []byte("w"), false, 1, Siblings)
	require.Equal(t, uint64(MaxCounter+1), next.Clock["a"])
	require.Error(t, Validate(next), "and the replica refuses to mint it (see engine)")
}
