package keyspace

import (
	"regexp"
	"testing"
	"unicode/utf8"

	"github.com/cockroachdb/errors"
)

var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzValidateTenantID checks the hand-written validator against the
// documented pattern: it accepts exactly what the regexp matches.
func FuzzValidateTenantID(f *testing.F) {
	for _, s := range []string{
		"acme", "a", "A-Z_0-9", "", "-", "_", "tenant.1", "a b", "a\x00b", "a*", "a>", "é",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  // 64
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // 65
		"acme\n", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateTenantID(id)
		if want := tenantIDPattern.MatchString(id); (err == nil) != want {
			t.Fatalf("ValidateTenantID(%q) = %v; the pattern says valid=%v", id, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateTenantID(%q) = %v, not marked ErrInvalid", id, err)
		}
	})
}

// FuzzValidateKey checks that a key is accepted exactly when it is valid
// UTF-8 of 1 to MaxKeyBytes bytes.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{
		"k", "user/42", "", "\x00", "日本語", "\xff", "\xed\xa0\x80", "a\xc3",
		string(make([]byte, MaxKeyBytes)), string(make([]byte, MaxKeyBytes+1)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		want := len(key) >= 1 && len(key) <= MaxKeyBytes && utf8.ValidString(key)
		if (err == nil) != want {
			t.Fatalf("ValidateKey(%q) = %v; want valid=%v", key, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateKey(%q) = %v, not marked ErrInvalid", key, err)
		}
	})
}

// FuzzHash checks that Hash is deterministic and that every other split of
// the same tenant+key bytes lands elsewhere: the length prefixes keep
// ("a:b", "c") and ("a", "b:c") apart. A real 64-bit collision among a few
// dozen splits would be a 2^-58 event, so any failure here is a bug.
func FuzzHash(f *testing.F) {
	for _, p := range [][2]string{
		{"a:b", "c"}, {"a", "b:c"}, {"", "abc"}, {"abc", ""}, {"acme", "user/42"},
		{"a\x00", "b"}, {"a", "\x00b"}, {"t", "\x01k"}, {"t\x01", "k"},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, tenant, key string) {
		h := Hash(tenant, key)
		if Hash(tenant, key) != h {
			t.Fatalf("Hash(%q, %q) is not deterministic", tenant, key)
		}
		joined := tenant + key
		if len(joined) > 64 {
			joined = joined[:64]
			tenant, key = joined[:min(len(tenant), 64)], joined[min(len(tenant), 64):]
			h = Hash(tenant, key)
		}
		for i := 0; i <= len(joined); i++ {
			if i != len(tenant) && Hash(joined[:i], joined[i:]) == h {
				t.Fatalf("Hash(%q, %q) == Hash(%q, %q)", tenant, key, joined[:i], joined[i:])
			}
		}
	})
}
