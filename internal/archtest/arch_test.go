// Package archtest holds the import rules of ARCHITECTURE.md as a test: a
// leaf that gains an import of ours, a pure package that comes to link
// nats.go, or two services that start importing each other fail CI.
package archtest

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/pairdb/pairdb/"

// leaves are the pure packages and what of ours each may import: nothing
// but the wire schema and other leaves. They do no I/O.
var leaves = map[string][]string{
	"ring":               nil,
	"dvv":                nil,
	"quorum":             nil,
	"keyspace":           nil,
	"causal":             nil,
	"status":             {"schemas/pairdbpb"},
	"dvv/dvvpb":          {"dvv", "schemas/pairdbpb"},
	"membership":         {"ring", "status", "schemas/pairdbpb"},
	"tenant":             {"keyspace", "quorum", "status", "schemas/pairdbpb"},
	"storagenode/engine": {"dvv", "dvv/dvvpb", "keyspace", "ring", "status", "schemas/pairdbpb"},
}

// apart are pairs of packages (prefixes) neither of which may import the
// other: the two services meet only on the wire, wired by cluster/ and cmd/.
var apart = [][2]string{
	{"coordinator", "storagenode"},
}

// inward: the storage node's protocol packages never import the node that
// wires them.
var inward = map[string]string{
	"storagenode/transfer": "storagenode",
	"storagenode/heal":     "storagenode",
}

// imports maps every package of the module (by path below the module) to
// the packages of ours and the external ones its non-test files import.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	out := map[string][]string{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir // a nested module is not ours to check here
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if !slices.Contains(out[pkg], p) {
				out[pkg] = append(out[pkg], p)
			}
		}
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

func ours(p string) (string, bool) { return strings.CutPrefix(p, module) }

func TestLeavesImportNothingOfOurs(t *testing.T) {
	all := imports(t)
	for leaf, allowed := range leaves {
		deps, ok := all[leaf]
		require.True(t, ok, "leaf %s is not in the tree: update ARCHITECTURE.md and this test", leaf)
		for _, d := range deps {
			if p, ok := ours(d); ok {
				require.Contains(t, allowed, p, "leaf %s imports %s: leaves import only the schema and other leaves (ARCHITECTURE.md)", leaf, p)
			}
		}
	}
}

func TestPurePackagesDoNotLinkNATS(t *testing.T) {
	all := imports(t)
	for leaf := range leaves {
		seen := map[string]bool{}
		var walk func(pkg string, path []string)
		walk = func(pkg string, path []string) {
			if seen[pkg] {
				return
			}
			seen[pkg] = true
			for _, d := range all[pkg] {
				require.False(t, strings.HasPrefix(d, "github.com/nats-io/"),
					"%s links %s through %v: nothing below bus may", leaf, d, append(path, pkg))
				if p, ok := ours(d); ok {
					walk(p, append(path, pkg))
				}
			}
		}
		walk(leaf, nil)
	}
}

func TestServicesMeetOnlyOnTheWire(t *testing.T) {
	all := imports(t)
	under := func(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }
	for pkg, deps := range all {
		for _, d := range deps {
			p, ok := ours(d)
			if !ok {
				continue
			}
			for _, pair := range apart {
				for _, dir := range [][2]string{pair, {pair[1], pair[0]}} {
					require.False(t, under(pkg, dir[0]) && under(p, dir[1]),
						"%s imports %s: %s and %s meet only on the wire", pkg, p, dir[0], dir[1])
				}
			}
			if root, ok := inward[pkg]; ok {
				require.NotEqual(t, root, p, "%s imports %s, which wires it", pkg, p)
			}
		}
	}
}
