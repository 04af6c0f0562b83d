package node

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// Resource usage of the node and its pods. A background loop asks the
// runtime for the stats of every running container in one call
// (StatsReader) every Config.StatsInterval, and reads the node's own
// /proc/stat and /proc/meminfo; the last two samples are kept. A /metrics
// scrape and a stats summary read only that cache, so neither ever fans
// out into a runtime call per pod: their cost is one walk of the cache.

// DefaultStatsInterval is how often the agent measures when
// Config.StatsInterval is 0 (the kubelet's housekeeping interval is 10 s
// too; metrics-server's resolution is 15 s).
const DefaultStatsInterval = 10 * time.Second

// initMetrics registers the agent's families and makes its stats cache.
func (a *Agent) initMetrics() {
	a.metrics = a.cfg.Metrics
	if a.metrics == nil {
		a.metrics = apiserver.NewRegistry()
	}
	obs := newRuntimeMetrics(a.metrics)
	if d, ok := a.rt.(deadlineRuntime); ok {
		d.obs = obs
		a.rt = d
	}
	interval := a.cfg.StatsInterval
	if interval <= 0 {
		interval = DefaultStatsInterval
	}
	reader, _ := a.cfg.Runtime.(runtimeapi.StatsReader)
	a.stats = &statsCache{reader: reader, interval: interval, timeout: min(a.cfg.RuntimeTimeout, interval), obs: obs, readNode: readProcNode}
	a.metrics.MustRegister(statsCollector{a})
}

// statsSample is one measurement of the node and its containers.
type statsSample struct {
	at         time.Time
	nodeCPU    uint64 // CPU nanoseconds the node has used since boot
	nodeMemory uint64 // working set bytes of the node
	nodeOK     bool
	containers map[string]runtimeapi.ContainerStats // by container ID
}

// statsCache keeps the agent's last two samples.
type statsCache struct {
	reader   runtimeapi.StatsReader // nil: the runtime cannot measure; only the node is
	interval time.Duration
	timeout  time.Duration
	obs      *runtimeMetrics
	readNode func() (cpuNanos, memBytes uint64, ok bool)

	mu         sync.Mutex
	prev, last *statsSample
}

// refresh takes one sample.
func (c *statsCache) refresh(ctx context.Context) error {
	s := &statsSample{at: time.Now(), containers: map[string]runtimeapi.ContainerStats{}}
	s.nodeCPU, s.nodeMemory, s.nodeOK = c.readNode()
	var err error
	if c.reader != nil {
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		var list []runtimeapi.ContainerStats
		start := time.Now()
		list, err = c.reader.ContainerStats(cctx)
		c.obs.observe("container_stats", time.Since(start), err)
		cancel()
		for _, cs := range list {
			s.containers[cs.ContainerID] = cs
		}
	}
	c.mu.Lock()
	c.prev, c.last = c.last, s
	c.mu.Unlock()
	return err
}

// run samples every interval until ctx ends.
func (c *statsCache) run(ctx context.Context, log func(error)) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if err := c.refresh(ctx); err != nil && ctx.Err() == nil {
			log(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// samples are the last two samples (either may be nil).
func (c *statsCache) samples() (prev, last *statsSample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.prev, c.last
}

// rate is the CPU usage in nanocores between two cumulative readings;
// false when it cannot be told (a restart reset the counter, no time
// passed).
func rate(prevNanos, lastNanos uint64, prevAt, lastAt time.Time) (uint64, bool) {
	d := lastAt.Sub(prevAt)
	if d <= 0 || lastNanos < prevNanos {
		return 0, false
	}
	return uint64(float64(lastNanos-prevNanos) / d.Seconds()), true
}

// Summary is the node's stats summary in the kubelet's form (GET
// /stats/summary): CPU in nanocores averaged between the last two samples,
// memory working sets, the pods' network bytes. Before two samples there
// are no CPU rates, and a container seen once has none.
func (a *Agent) Summary() *statsv1alpha1.Summary {
	prev, last := a.stats.samples()
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: a.cfg.NodeName}}
	if last == nil {
		return sum
	}
	ts := metav1.NewTime(last.at)
	if last.nodeOK {
		sum.Node.CPU = &statsv1alpha1.CPUStats{Time: ts, UsageCoreNanoSeconds: u64p(last.nodeCPU)}
		sum.Node.Memory = &statsv1alpha1.MemoryStats{Time: ts, WorkingSetBytes: u64p(last.nodeMemory)}
		if prev != nil && prev.nodeOK {
			if r, ok := rate(prev.nodeCPU, last.nodeCPU, prev.at, last.at); ok {
				sum.Node.CPU.UsageNanoCores = &r
			}
		}
	}
	pods := map[string]*statsv1alpha1.PodStats{}
	var order []string
	for id, cs := range last.containers {
		ps := pods[cs.PodUID]
		if ps == nil {
			ps = &statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: cs.Pod, Namespace: cs.Namespace, UID: cs.PodUID},
				Network: &statsv1alpha1.NetworkStats{Time: ts}}
			pods[cs.PodUID] = ps
			order = append(order, cs.PodUID)
		}
		c := statsv1alpha1.ContainerStats{Name: cs.Container,
			CPU:    &statsv1alpha1.CPUStats{Time: ts, UsageCoreNanoSeconds: u64p(cs.CPUNanos)},
			Memory: &statsv1alpha1.MemoryStats{Time: ts, WorkingSetBytes: u64p(cs.MemoryWorkingSetBytes)}}
		if prev != nil {
			if p, ok := prev.containers[id]; ok {
				if r, ok := rate(p.CPUNanos, cs.CPUNanos, prev.at, last.at); ok {
					c.CPU.UsageNanoCores = &r
				}
			}
		}
		ps.Containers = append(ps.Containers, c)
		// The containers share the pod's network namespace: the
		// largest reading is the pod's.
		ps.Network.RxBytes = u64p(max(deref(ps.Network.RxBytes), cs.RxBytes))
		ps.Network.TxBytes = u64p(max(deref(ps.Network.TxBytes), cs.TxBytes))
	}
	for _, uid := range order {
		sum.Pods = append(sum.Pods, *pods[uid])
	}
	return sum
}

func u64p(v uint64) *uint64 { return &v }

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// readProcNode is the node's CPU time (all CPUs' busy jiffies in
// /proc/stat, at USER_HZ 100) and working set (MemTotal − MemAvailable in
// /proc/meminfo), as the kubelet reports the node from its root cgroup.
func readProcNode() (cpuNanos, memBytes uint64, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, false
	}
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal …
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0, false
	}
	var busy uint64
	for i, v := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	cpuNanos = busy * uint64(time.Second/100)
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return cpuNanos, 0, false
	}
	var total, avail uint64
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = n * 1024
		case "MemAvailable:":
			avail = n * 1024
		}
	}
	if total == 0 || avail > total {
		return cpuNanos, 0, false
	}
	return cpuNanos, total - avail, true
}

// runtimeMetrics time the runtime's calls, as the kubelet's
// kubelet_runtime_operations_duration_seconds and …_errors_total.
type runtimeMetrics struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

func newRuntimeMetrics(reg prometheus.Registerer) *runtimeMetrics {
	m := &runtimeMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kubelet_runtime_operations_duration_seconds",
			Help:    "Duration in seconds of the container runtime's (Podman's) operations, broken out by operation type.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"operation_type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubelet_runtime_operations_errors_total",
			Help: "Cumulative number of the container runtime's operations that failed, by operation type.",
		}, []string{"operation_type"}),
	}
	reg.MustRegister(m.latency, m.errors)
	return m
}

func (m *runtimeMetrics) observe(kind string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.latency.WithLabelValues(kind).Observe(d.Seconds())
	if err != nil {
		m.errors.WithLabelValues(kind).Inc()
	}
}

// statsCollector exposes the cache as the kubelet's resource metrics
// (/metrics/resource names), each sample stamped with the time it was
// measured.
type statsCollector struct{ a *Agent }

var (
	descNodeCPU = prometheus.NewDesc("node_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the node in core-seconds", nil, nil)
	descNodeMem = prometheus.NewDesc("node_memory_working_set_bytes",
		"Current working set of the node in bytes", nil, nil)
	descPodCPU = prometheus.NewDesc("pod_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the pod in core-seconds", []string{"namespace", "pod"}, nil)
	descPodMem = prometheus.NewDesc("pod_memory_working_set_bytes",
		"Current working set of the pod in bytes", []string{"namespace", "pod"}, nil)
	descCtrCPU = prometheus.NewDesc("container_cpu_usage_seconds_total",
		"Cumulative cpu time consumed by the container in core-seconds", []string{"container", "namespace", "pod"}, nil)
	descCtrMem = prometheus.NewDesc("container_memory_working_set_bytes",
		"Current working set of the container in bytes", []string{"container", "namespace", "pod"}, nil)
	descNetRx = prometheus.NewDesc("pod_network_receive_bytes_total",
		"Cumulative bytes received by the pod's network namespace", []string{"namespace", "pod"}, nil)
	descNetTx = prometheus.NewDesc("pod_network_transmit_bytes_total",
		"Cumulative bytes sent by the pod's network namespace", []string{"namespace", "pod"}, nil)
	descScrapeAge = prometheus.NewDesc("flotilla_node_stats_age_seconds",
		"Seconds since the agent last measured its node and pods (the stats are measured in the background)", nil, nil)
)

func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodeCPU, descNodeMem, descPodCPU, descPodMem, descCtrCPU, descCtrMem, descNetRx, descNetTx, descScrapeAge} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	_, last := c.a.stats.samples()
	if last == nil {
		return
	}
	at := last.at
	stamp := func(m prometheus.Metric) { ch <- prometheus.NewMetricWithTimestamp(at, m) }
	ch <- prometheus.MustNewConstMetric(descScrapeAge, prometheus.GaugeValue, time.Since(at).Seconds())
	if last.nodeOK {
		stamp(prometheus.MustNewConstMetric(descNodeCPU, prometheus.CounterValue, float64(last.nodeCPU)/1e9))
		stamp(prometheus.MustNewConstMetric(descNodeMem, prometheus.GaugeValue, float64(last.nodeMemory)))
	}
	type podSum struct {
		ns, name string
		cpu, mem uint64
		rx, tx   uint64
	}
	pods := map[string]*podSum{}
	for _, cs := range last.containers {
		stamp(prometheus.MustNewConstMetric(descCtrCPU, prometheus.CounterValue, float64(cs.CPUNanos)/1e9, cs.Container, cs.Namespace, cs.Pod))
		stamp(prometheus.MustNewConstMetric(descCtrMem, prometheus.GaugeValue, float64(cs.MemoryWorkingSetBytes), cs.Container, cs.Namespace, cs.Pod))
		p := pods[cs.PodUID]
		if p == nil {
			p = &podSum{ns: cs.Namespace, name: cs.Pod}
			pods[cs.PodUID] = p
		}
		p.cpu += cs.CPUNanos
		p.mem += cs.MemoryWorkingSetBytes
		p.rx, p.tx = max(p.rx, cs.RxBytes), max(p.tx, cs.TxBytes)
	}
	for _, p := range pods {
		stamp(prometheus.MustNewConstMetric(descPodCPU, prometheus.CounterValue, float64(p.cpu)/1e9, p.ns, p.name))
		stamp(prometheus.MustNewConstMetric(descPodMem, prometheus.GaugeValue, float64(p.mem), p.ns, p.name))
		stamp(prometheus.MustNewConstMetric(descNetRx, prometheus.CounterValue, float64(p.rx), p.ns, p.name))
		stamp(prometheus.MustNewConstMetric(descNetTx, prometheus.CounterValue, float64(p.tx), p.ns, p.name))
	}
}
