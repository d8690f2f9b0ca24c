package main

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
)

// ticksPerSecond is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100
// on every Linux the layout runs on (it is fixed for user space, whatever
// the kernel's own tick rate).
const ticksPerSecond = 100

// selfRole names the driver's own process in the CPU report: the clients,
// and for the in-process transport also its responder and replicas.
const selfRole = "bench"

// proc is one process whose CPU time is charged to the stores it serves.
type proc struct {
	stores []string
	role   string
	pid    int // 0: this process
}

// parseProc reads a --proc value, "store[,store...]:role=pid".
func parseProc(s string) (proc, error) {
	stores, rest, ok := strings.Cut(s, ":")
	role, pid, ok2 := strings.Cut(rest, "=")
	if !ok || !ok2 || stores == "" || role == "" {
		return proc{}, errors.Newf("--proc %q: want store[,store...]:role=pid", s)
	}
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return proc{}, errors.Newf("--proc %q: %q is not a process id", s, pid)
	}
	return proc{stores: strings.Split(stores, ","), role: role, pid: n}, nil
}

// procsOf lists the processes serving store, this process last.
func procsOf(all []proc, store string) []proc {
	var out []proc
	for _, p := range all {
		for _, s := range p.stores {
			if s == store {
				out = append(out, p)
				break
			}
		}
	}
	return append(out, proc{stores: []string{store}, role: selfRole})
}

// cpuTicks is the user plus system CPU time a process has used, in
// ticksPerSecond units (all its threads).
func cpuTicks(pid int) (uint64, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/stat"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, errors.Wrap(err, "read CPU time")
	}
	return parseStatTicks(string(b))
}

// parseStatTicks takes utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces, so fields are counted from the last ')'.
func parseStatTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.CombineErrors(err1, err2); err != nil {
		return 0, errors.Wrap(err, "parse /proc stat CPU times")
	}
	return utime + stime, nil
}

// cpuSnapshot reads every process's CPU time; a process that cannot be
// read (it died) counts as -1.
func cpuSnapshot(procs []proc) []int64 {
	out := make([]int64, len(procs))
	for i, p := range procs {
		t, err := cpuTicks(p.pid)
		if err != nil {
			out[i] = -1
			continue
		}
		out[i] = int64(t)
	}
	return out
}

// cpuPerOp turns two snapshots into microseconds of CPU per operation.
func cpuPerOp(procs []proc, before, after []int64, ops uint64) []ProcCPU {
	out := make([]ProcCPU, 0, len(procs))
	for i, p := range procs {
		if before[i] < 0 || after[i] < 0 || ops == 0 {
			continue
		}
		us := float64(after[i]-before[i]) * (1e6 / ticksPerSecond) / float64(ops)
		out = append(out, ProcCPU{Role: p.role, UsPerOp: us})
	}
	return out
}

// hostBusyTicks is the machine's busy CPU time, all cores, from the first
// line of /proc/stat: user, nice, system, irq, softirq and steal (guest
// time is already in user).
func hostBusyTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, errors.Wrap(err, "read /proc/stat")
	}
	return parseHostBusy(string(b))
}

func parseHostBusy(stat string) (uint64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, errors.Wrap(err, "parse /proc/stat")
		}
		busy += n
	}
	return busy, nil
}

// meter reads, around a run phase, the CPU time of the store's processes,
// of the rest of the layout (the stores idle meanwhile) and of the whole
// machine, so that the time of processes outside the layout (a build, other
// tests) shows next to the figures it disturbs.
type meter struct {
	store, rest []proc
	before      []int64
	restBefore  []int64
	hostBefore  int64
	start       time.Time
}

func startMeter(all []proc, store string) *meter {
	m := &meter{store: procsOf(all, store)}
	for _, p := range all {
		if !slices.Contains(p.stores, store) && !slices.ContainsFunc(m.rest, func(q proc) bool { return q.pid == p.pid }) {
			m.rest = append(m.rest, p)
		}
	}
	m.before, m.restBefore, m.hostBefore = cpuSnapshot(m.store), cpuSnapshot(m.rest), hostSnapshot()
	m.start = time.Now()
	return m
}

func hostSnapshot() int64 {
	t, err := hostBusyTicks()
	if err != nil {
		return -1
	}
	return int64(t)
}

// usage is what a meter saw: CPU per operation of the store's processes,
// and the cores that the idle rest of the layout and the processes
// outside it kept busy on average.
type usage struct {
	perOp             []ProcCPU
	idleCores, others float64
}

func (m *meter) stop(ops uint64) usage {
	after, restAfter, hostAfter := cpuSnapshot(m.store), cpuSnapshot(m.rest), hostSnapshot()
	u := usage{perOp: cpuPerOp(m.store, m.before, after, ops)}
	secs := time.Since(m.start).Seconds() * ticksPerSecond
	used := func(before, after []int64) float64 {
		sum := 0.0
		for i := range before {
			if before[i] >= 0 && after[i] >= 0 {
				sum += float64(after[i] - before[i])
			}
		}
		return sum
	}
	mine, rest := used(m.before, after), used(m.restBefore, restAfter)
	u.idleCores = rest / secs
	if m.hostBefore >= 0 && hostAfter >= 0 {
		u.others = max(float64(hostAfter-m.hostBefore)-mine-rest, 0) / secs
	}
	return u
}
