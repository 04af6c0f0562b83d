package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Idle cost: what a node at rest costs, measured on the real binary.
const (
	idlePods   = 100
	idleWarmup = 20 * time.Second // the start's own work settles (statuses, endpoints, the first resyncs)
	idleWindow = 60 * time.Second // the window sampled
)

// BenchmarkIdle100Pods starts `flotilla up`, commits a Deployment of 100
// busybox `sleep` pods, waits until all are Running, lets the start settle
// (idleWarmup), then samples the CPU time (/proc/PID/stat: user + system,
// with waited-for children) and the resident memory (VmRSS, once a second)
// of the flotilla process and of its Podman service over idleWindow. It
// reports % of one core and MB (the largest RSS seen) for each, and the
// CPU of both together:
//
//	go test -count=1 -run '^$' -bench BenchmarkIdle100Pods -benchtime 1x -v -timeout 20m ./cmd/flotilla/
//
// The target (issue 9): both together ≤ 5% of one core, Flotilla ≤ 150 MB.
func BenchmarkIdle100Pods(b *testing.B) {
	c := newUpCluster(b)
	c.start()
	c.git("rm", "-q", "deployment.yaml", "configmap.yaml")
	if err := writeRepoFile(c, "idle.yaml", benchDeployment("idle", idlePods)); err != nil {
		b.Fatal(err)
	}
	c.git("add", "-A")
	c.git("commit", "-qm", "100 idle pods")
	c.eventually(fmt.Sprintf("%d pods Running", idlePods), 10*time.Minute, func() error {
		return runningPods(c, "idle", idlePods)
	})
	podmanPid, err := readPid(filepath.Join(c.dataDir, "podman", "podman.pid"))
	if err != nil {
		b.Fatalf("the Podman service's pid: %v", err)
	}
	flotillaPid := c.cmd.Process.Pid
	b.Logf("%d pods Running; settling %s, then sampling flotilla (pid %d) and its Podman service (pid %d) for %s",
		idlePods, idleWarmup, flotillaPid, podmanPid, idleWindow)
	time.Sleep(idleWarmup) // a measurement window, not a wait for a condition

	flo, pod := newProcSampler(flotillaPid), newProcSampler(podmanPid)
	for _, s := range []*procSampler{flo, pod} {
		if err := s.start(); err != nil {
			b.Fatal(err)
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for end := time.Now().Add(idleWindow); time.Now().Before(end); <-tick.C {
		for _, s := range []*procSampler{flo, pod} {
			if err := s.sampleRSS(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, s := range []*procSampler{flo, pod} {
		if err := s.stop(); err != nil {
			b.Fatal(err)
		}
	}
	if err := runningPods(c, "idle", idlePods); err != nil {
		b.Fatalf("after the window: %v", err)
	}
	b.Logf("flotilla's memory: %s", rssBreakdown(flotillaPid))
	b.Logf("flotilla: %.2f%% of one core, %.0f MB (max RSS); podman service: %.2f%% of one core, %.0f MB; together %.2f%%",
		flo.corePercent(), flo.maxMB(), pod.corePercent(), pod.maxMB(), flo.corePercent()+pod.corePercent())
	b.ReportMetric(flo.corePercent(), "flotilla-%core")
	b.ReportMetric(flo.maxMB(), "flotilla-MB")
	b.ReportMetric(pod.corePercent(), "podman-%core")
	b.ReportMetric(pod.maxMB(), "podman-MB")
	b.ReportMetric(flo.corePercent()+pod.corePercent(), "total-%core")
}

// procSampler measures one process: CPU time over a window, peak RSS.
type procSampler struct {
	pid            int
	t0, t1         time.Time
	ticks0, ticks1 int64
	rssMax         int64
}

func newProcSampler(pid int) *procSampler { return &procSampler{pid: pid} }

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

func (s *procSampler) start() error {
	t, err := procCPUTicks(s.pid)
	s.t0, s.ticks0 = time.Now(), t
	return err
}

func (s *procSampler) stop() error {
	t, err := procCPUTicks(s.pid)
	s.t1, s.ticks1 = time.Now(), t
	return err
}

func (s *procSampler) sampleRSS() error {
	kb, err := procRSSKiB(s.pid)
	if err != nil {
		return err
	}
	s.rssMax = max(s.rssMax, kb)
	return nil
}

func (s *procSampler) corePercent() float64 {
	cpu := float64(s.ticks1-s.ticks0) / clockTicks
	return 100 * cpu / s.t1.Sub(s.t0).Seconds()
}

func (s *procSampler) maxMB() float64 { return float64(s.rssMax) * 1024 / 1e6 }

// procCPUTicks is utime + stime + cutime + cstime of pid.
func procCPUTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, fmt.Errorf("process %d: short stat %q", pid, s)
	}
	var sum int64
	for _, k := range []int{11, 12, 13, 14} { // fields 14-17: utime stime cutime cstime
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process %d: stat field %d: %w", pid, k+3, err)
		}
		sum += v
	}
	return sum, nil
}

func procRSSKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				return strconv.ParseInt(fields[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("process %d: no VmRSS in its status", pid)
}

func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// rssBreakdown says what pid's resident memory is: anonymous (the Go heap
// and stacks) and file-backed (mapped files, such as the store's), with the
// three largest mappings.
func rssBreakdown(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	type mapping struct {
		name string
		kb   int64
	}
	var maps []mapping
	var anon, file int64
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			cur = "[anon]"
			if len(f) >= 6 {
				cur = f[5]
			}
		case len(f) >= 2 && f[0] == "Rss:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if strings.HasPrefix(cur, "/") {
				file += kb
			} else {
				anon += kb
			}
			maps = append(maps, mapping{cur, kb})
		}
	}
	sort.Slice(maps, func(i, j int) bool { return maps[i].kb > maps[j].kb })
	var top []string
	for _, m := range maps[:min(3, len(maps))] {
		top = append(top, fmt.Sprintf("%s %d MB", filepath.Base(m.name), m.kb/1024))
	}
	return fmt.Sprintf("anonymous %d MB, file-backed %d MB; largest: %s", anon/1024, file/1024, strings.Join(top, ", "))
}
