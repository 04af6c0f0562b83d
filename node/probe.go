package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// probeState is one container run's probe bookkeeping; it resets when the
// container (re)starts.
type probeState struct {
	ready                        bool
	readyOK, readyFail, liveFail int
	nextReady, nextLive          time.Time
}

// probe runs the readiness and liveness probes that are due. It returns
// when the next one is due, and whether liveness failed enough to restart.
// Every failure is an Unhealthy Event, as the kubelet records them (the
// recorder aggregates the repeats).
func (w *podWorker) probe(ctx context.Context, pod *corev1.Pod, spec *corev1.Container, c *ctrState, now time.Time) (time.Time, bool) {
	var next time.Time
	restart := false
	ps := &c.probes
	if p := spec.ReadinessProbe; p != nil {
		due := dueAt(p, c.startedAt, ps.nextReady)
		if !now.Before(due) {
			err := w.runProbe(ctx, spec, p)
			if err == nil {
				ps.readyOK++
				ps.readyFail = 0
				if ps.readyOK >= threshold(p.SuccessThreshold) {
					ps.ready = true
				}
			} else {
				w.a.events.Eventf(containerRef(pod, spec), corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: %v", err)
				ps.readyFail++
				ps.readyOK = 0
				if ps.readyFail >= threshold(p.FailureThreshold, 3) {
					ps.ready = false
				}
			}
			ps.nextReady = now.Add(period(p))
			due = ps.nextReady
		}
		next = minTime(next, due)
	}
	if p := spec.LivenessProbe; p != nil {
		due := dueAt(p, c.startedAt, ps.nextLive)
		if !now.Before(due) {
			if err := w.runProbe(ctx, spec, p); err == nil {
				ps.liveFail = 0
			} else {
				w.a.events.Eventf(containerRef(pod, spec), corev1.EventTypeWarning, "Unhealthy", "Liveness probe failed: %v", err)
				ps.liveFail++
				if ps.liveFail >= threshold(p.FailureThreshold, 3) {
					restart = true
				}
			}
			ps.nextLive = now.Add(period(p))
			due = ps.nextLive
		}
		next = minTime(next, due)
	}
	return next, restart
}

func dueAt(p *corev1.Probe, startedAt, next time.Time) time.Time {
	first := startedAt.Add(time.Duration(p.InitialDelaySeconds) * time.Second)
	if next.After(first) {
		return next
	}
	return first
}

func period(p *corev1.Probe) time.Duration {
	if p.PeriodSeconds <= 0 {
		return 10 * time.Second
	}
	return time.Duration(p.PeriodSeconds) * time.Second
}

func threshold(v int32, def ...int32) int {
	if v > 0 {
		return int(v)
	}
	if len(def) > 0 {
		return int(def[0])
	}
	return 1
}

// runProbe runs one probe against the pod IP; nil when it passed.
func (w *podWorker) runProbe(ctx context.Context, spec *corev1.Container, p *corev1.Probe) error {
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := ""
	if w.net != nil && w.net.IP != nil {
		host = w.net.IP.String()
	}
	var err error
	switch {
	case p.HTTPGet != nil:
		err = probeHTTP(ctx, p.HTTPGet, host, spec)
	case p.TCPSocket != nil:
		err = probeTCP(ctx, p.TCPSocket, host, spec)
	case p.Exec != nil:
		err = w.probeExec(ctx, p.Exec, spec.Name)
	case p.GRPC != nil:
		err = probeTCP(ctx, &corev1.TCPSocketAction{Port: intstr.FromInt32(p.GRPC.Port)}, host, spec)
	default:
		err = fmt.Errorf("probe has no handler")
	}
	if err != nil {
		w.log.Debug("probe failed", "container", spec.Name, "err", err)
	}
	return err
}

func resolvePort(port intstr.IntOrString, spec *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	for _, p := range spec.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no port named %q in container %s", port.StrVal, spec.Name)
}

// probeClient makes httpGet probes. With scheme HTTPS it is the kubelet's
// HTTPS probe: the pod's certificate is its own, not the cluster's, so it
// is not verified (the kubelet does not either); a probe carries no
// credential, and its answer only decides the container's health.
var probeClient = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // an HTTPS probe, as the kubelet's
		DisableKeepAlives: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func probeHTTP(ctx context.Context, h *corev1.HTTPGetAction, host string, spec *corev1.Container) error {
	port, err := resolvePort(h.Port, spec)
	if err != nil {
		return err
	}
	if h.Host != "" {
		host = h.Host
	}
	scheme := "http"
	if h.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: h.Path}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "flotilla-probe")
	for _, hd := range h.HTTPHeaders {
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err // Get "URL": …, as the kubelet reports it
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

func probeTCP(ctx context.Context, t *corev1.TCPSocketAction, host string, spec *corev1.Container) error {
	port, err := resolvePort(t.Port, spec)
	if err != nil {
		return err
	}
	if t.Host != "" {
		host = t.Host
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("tcp probe: %w", err)
	}
	return conn.Close()
}

func (w *podWorker) probeExec(ctx context.Context, e *corev1.ExecAction, container string) error {
	ex, ok := w.a.cfg.Runtime.(runtimeapi.Execer)
	if !ok {
		return fmt.Errorf("exec probe: runtime cannot exec")
	}
	id := w.containerID(container)
	code, err := ex.Exec(ctx, id, e.Command)
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("exec probe: exit code %d", code)
	}
	return nil
}
