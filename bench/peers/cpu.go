package main

import (
	"os"
	"strconv"
	"strings"

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
