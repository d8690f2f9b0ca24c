// Package config resolves the settings of PairDB's commands from four
// sources, in this order of precedence:
//
//  1. a command-line flag (--request-timeout 3s),
//  2. an environment variable (PAIRDB_REQUEST_TIMEOUT=3s; a few settings
//     accept another name too, such as NATS_URL for the server),
//  3. the YAML file named by --config or PAIRDB_CONFIG,
//  4. the default.
//
// Each command has one struct (Global for what every command shares, Dev,
// Coordinator, StorageNode) whose field tags name the setting: `yaml` is
// its key in the file, `flag` (default: the key with '-' for '_'), `short`,
// `env` (default: PAIRDB_ and the key in upper case; a comma adds another
// name, tried after the first) and `usage`. DefaultX returns the defaults and
// X.Validate checks the values, naming the setting in every message.
//
// The file holds the global settings at the top level and one mapping per
// command:
//
//	server: nats://nats:4222
//	log_format: json
//	coordinator:
//	  request_timeout: 3s
//	storagenode:
//	  cache_bytes: 256MiB
//
// A key the file does not know, anywhere in it, is an error naming the key:
// a typo must not silently leave a default in place. Empty environment
// variables count as unset.
package config

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Section names: the commands with settings of their own, and the YAML
// mapping that holds them. Top is the file's top level (Global).
const (
	Top                = ""
	SectionDev         = "dev"
	SectionCoordinator = "coordinator"
	SectionStorageNode = "storagenode"
)

// EnvPrefix starts every setting's environment variable.
const EnvPrefix = "PAIRDB_"

// Names of the config file's own flag and variable.
const (
	FileFlag = "config"
	FileEnv  = EnvPrefix + "CONFIG"
)

// LookupEnv reads one environment variable; os.LookupEnv in production, a
// map in tests.
type LookupEnv func(name string) (string, bool)

// Setting describes one setting: where it comes from and what it means.
type Setting struct {
	// Section is the command the setting belongs to (Top: every command).
	Section string
	// Key is the setting's YAML key within its section.
	Key string
	// Flag is the long flag name (without --); Short the one-letter one.
	Flag, Short string
	// Env lists the environment variables read, in order.
	Env []string
	// Usage is the one-line meaning.
	Usage string

	field reflect.Value // addressable
}

// Name is the setting's full name: "coordinator.request_timeout", or just
// the key for a global setting. Error messages use it.
func (s Setting) Name() string { return qualify(s.Section, s.Key) }

func qualify(section, key string) string {
	if section == Top {
		return key
	}
	return section + "." + key
}

// Value formats the setting's current value as flags and the README show it.
func (s Setting) Value() string { return format(s.field) }

// Settings lists the settings of cfg (a pointer to one of this package's
// structs) in field order; their fields alias cfg's.
func Settings(section string, cfg any) []Setting {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("config: Settings needs a pointer to a struct, got %T", cfg))
	}
	var out []Setting
	collect(section, v.Elem(), &out)
	return out
}

func collect(section string, v reflect.Value, out *[]Setting) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.Anonymous && opts == "inline" {
			collect(section, v.Field(i), out)
			continue
		}
		if key == "" || key == "-" {
			continue
		}
		s := Setting{
			Section: section,
			Key:     key,
			Flag:    f.Tag.Get("flag"),
			Short:   f.Tag.Get("short"),
			Usage:   f.Tag.Get("usage"),
			field:   v.Field(i),
		}
		if s.Flag == "" {
			s.Flag = strings.ReplaceAll(key, "_", "-")
		}
		if env := f.Tag.Get("env"); env != "" {
			s.Env = strings.Split(env, ",")
		} else {
			s.Env = []string{EnvPrefix + strings.ToUpper(key)}
		}
		if kindOf(s.field) == "" {
			panic(fmt.Sprintf("config: setting %s has unsupported type %s", s.Name(), s.field.Type()))
		}
		*out = append(*out, s)
	}
}

// Bind registers one flag per setting of cfg on fs. Each flag writes
// straight into cfg's field, so cfg must already hold the defaults (they
// are what --help shows). Resolve later fills the fields whose flag was not
// given.
func Bind(fs *pflag.FlagSet, section string, cfg any) {
	for _, s := range Settings(section, cfg) {
		usage := s.Usage + " (env " + strings.Join(s.Env, " or ") + ")"
		fl := fs.VarPF(fieldValue{s.field}, s.Flag, s.Short, usage)
		if s.field.Kind() == reflect.Bool {
			fl.NoOptDefVal = "true"
		}
	}
}

// Resolve fills every setting of cfg whose flag was not given on fs from the
// environment, else from file (nil: no file), else leaves the default. It
// does not validate: call the struct's Validate after.
func Resolve(fs *pflag.FlagSet, section string, cfg any, env LookupEnv, file *File) error {
	for _, s := range Settings(section, cfg) {
		if fl := fs.Lookup(s.Flag); fl != nil && fl.Changed {
			continue
		}
		if name, val, ok := lookup(env, s.Env); ok {
			if err := parse(s.field, val); err != nil {
				return errors.Newf("%s: %s from %s", s.Name(), err, name)
			}
			continue
		}
		if file == nil {
			continue
		}
		if n, ok := file.values[s.Name()]; ok {
			if err := parse(s.field, n.Value); err != nil {
				return errors.Newf("%s: %s (%s line %d)", s.Name(), err, file.name, n.Line)
			}
		}
	}
	return nil
}

func lookup(env LookupEnv, names []string) (name, val string, ok bool) {
	for _, name := range names {
		if v, ok := env(name); ok && v != "" {
			return name, v, true
		}
	}
	return "", "", false
}

// File is a parsed config file.
type File struct {
	name   string
	values map[string]*yaml.Node // by Setting.Name
}

// ReadFile reads and parses the config file at path; see Parse.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrap(err, "read the config file")
	}
	return Parse(path, data)
}

// Parse checks a config file against every command's settings: a key no
// command knows, a command mapping that is not a mapping, a list where a
// value belongs or a key given twice is an error naming the key and line.
// name is the file's name for those messages.
func Parse(name string, data []byte) (*File, error) {
	f := &File{name: name, values: map[string]*yaml.Node{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, errors.Wrapf(err, "config file %s", name)
	}
	if len(doc.Content) == 0 { // empty or only comments
		return f, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, errors.Newf("config file %s line %d: the top level must be a mapping of settings", name, root.Line)
	}
	known := map[string]map[string]bool{}
	for _, sec := range sections() {
		keys := map[string]bool{}
		for _, s := range Settings(sec.name, sec.cfg) {
			keys[s.Key] = true
		}
		known[sec.name] = keys
	}
	if err := f.walk(root, Top, known); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) walk(m *yaml.Node, section string, known map[string]map[string]bool) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		name := qualify(section, k.Value)
		if _, isSection := known[k.Value]; section == Top && isSection && k.Value != Top {
			if v.Kind != yaml.MappingNode {
				return errors.Newf("config file %s line %d: %q must be a mapping of %s settings", f.name, k.Line, k.Value, k.Value)
			}
			if err := f.walk(v, k.Value, known); err != nil {
				return err
			}
			continue
		}
		if !known[section][k.Value] {
			return errors.Newf("config file %s line %d: unknown setting %q", f.name, k.Line, name)
		}
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return errors.Newf("config file %s line %d: %s needs a single value", f.name, k.Line, name)
		}
		if _, dup := f.values[name]; dup {
			return errors.Newf("config file %s line %d: %s is set twice", f.name, k.Line, name)
		}
		f.values[name] = v
	}
	return nil
}

// Bytes is a size in bytes. It parses plain numbers and the suffixes B, KB,
// MB, GB (powers of 1000) and KiB, MiB, GiB (powers of 1024).
type Bytes int64

var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// ParseBytes parses a size such as "64MiB" or "1000000".
func ParseBytes(s string) (Bytes, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > (1<<62)/mult || n < -(1<<62)/mult {
		return 0, errors.Newf("%q is not a size (a number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB)", s)
	}
	return Bytes(n * mult), nil
}

// String prints the size in the largest binary unit that divides it.
func (b Bytes) String() string {
	if b != 0 {
		for _, u := range []struct {
			suffix string
			n      int64
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
			if int64(b)%u.n == 0 {
				return strconv.FormatInt(int64(b)/u.n, 10) + u.suffix
			}
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	bytesType    = reflect.TypeFor[Bytes]()
)

// kindOf names the supported field types ("" for an unsupported one); it is
// also the type pflag shows in --help.
func kindOf(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return "duration"
	case v.Type() == bytesType:
		return "size"
	}
	switch v.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int:
		return "int"
	case reflect.Float64:
		return "float"
	}
	return ""
}

func parse(v reflect.Value, s string) error {
	switch kindOf(v) {
	case "duration":
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return errors.Newf("%q is not a duration (such as 500ms, 5s, 10m, 24h)", s)
		}
		v.SetInt(int64(d))
	case "size":
		b, err := ParseBytes(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(b))
	case "string":
		v.SetString(s)
	case "bool":
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return errors.Newf("%q is not true or false", s)
		}
		v.SetBool(b)
	case "int":
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return errors.Newf("%q is not a whole number", s)
		}
		v.SetInt(int64(n))
	case "float":
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return errors.Newf("%q is not a number", s)
		}
		v.SetFloat(f)
	}
	return nil
}

func format(v reflect.Value) string {
	switch kindOf(v) {
	case "duration":
		return FormatDuration(time.Duration(v.Int()))
	case "size":
		return Bytes(v.Int()).String()
	case "bool":
		return strconv.FormatBool(v.Bool())
	case "int":
		return strconv.FormatInt(v.Int(), 10)
	case "float":
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return v.String()
}

// FormatDuration prints d without zero trailing units: 24h, 10m, 1m30s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fieldValue is a pflag.Value writing into one setting's field.
type fieldValue struct{ v reflect.Value }

func (f fieldValue) String() string { return format(f.v) }

func (f fieldValue) Set(s string) error { return parse(f.v, s) }

func (f fieldValue) Type() string { return kindOf(f.v) }

type section struct {
	name string
	cfg  any
}

// sections lists every command's settings with its defaults, top level
// first, in the order the README table shows them.
func sections() []section {
	g, d, c, s := DefaultGlobal(), DefaultDev(), DefaultCoordinator(), DefaultStorageNode()
	return []section{{Top, &g}, {SectionDev, &d}, {SectionCoordinator, &c}, {SectionStorageNode, &s}}
}

// envNotSettings are PAIRDB_ variables that are not settings of these
// commands but are used elsewhere (the healthcheck binary, tests).
var envNotSettings = []string{FileEnv, EnvPrefix + "HEALTHCHECK_URL", EnvPrefix + "TEST_"}

// UnknownEnv lists the PAIRDB_ variables of environ (os.Environ's form)
// that no command reads: most likely typos, which would otherwise leave a
// default silently in place. Variables of other commands' settings are not
// reported, so one environment can serve several commands.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, sec := range sections() {
		for _, s := range Settings(sec.name, sec.cfg) {
			for _, e := range s.Env {
				known[e] = true
			}
		}
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || known[name] {
			continue
		}
		if slices.ContainsFunc(envNotSettings, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		out = append(out, name)
	}
	return out
}
