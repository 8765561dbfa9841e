//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/<pid>/stat: 100 on every Linux architecture Go supports (USER_HZ).
const clockTicks = 100

var terminateSignal = syscall.SIGTERM

// readProcCPU returns the user + system CPU time of process pid, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks).
func readProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// readProcRSS returns VmRSS of process pid in bytes, from
// /proc/<pid>/status.
func readProcRSS(pid int) (int64, error) {
	return procStatusKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

func procStatusKB(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			fs := strings.Fields(rest)
			if len(fs) >= 1 {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return kb * 1024, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}

// setChildAttrs makes the child server die with this process.
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// raiseFileLimit raises the soft RLIMIT_NOFILE towards the hard limit when
// the idle scenario needs more descriptors than the soft limit allows (the
// server started later inherits it).
func raiseFileLimit(p Params, log io.Writer) {
	need := uint64(1024)
	if p.Scenario == "idle" {
		need = uint64(p.Connections)*2 + 256 // client + own server, both sides of loopback
		if p.Target != "" {
			need = uint64(p.Connections) + 256
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Cur >= need {
		return
	}
	want := min(max(need, rl.Cur), rl.Max)
	old := rl.Cur
	rl.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Fprintf(log, "commucat-bench: cannot raise the open-file limit from %d: %v\n", old, err)
		return
	}
	if want < need {
		fmt.Fprintf(log, "commucat-bench: open-file limit %d (hard) is below the %d this run needs\n", want, need)
	}
}

// selfCPU returns this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfRSS returns this process's VmRSS in bytes.
func selfRSS() int64 {
	n, _ := procStatusKB("/proc/self/status", "VmRSS:")
	return n
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotalKB() int64 {
	n, _ := procStatusKB("/proc/meminfo", "MemTotal:")
	return n / 1024
}

func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
