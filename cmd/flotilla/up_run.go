package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/node/host"
	"github.com/flotilla-dev/flotilla/node/podman"
	"github.com/flotilla-dev/flotilla/schema"
)

// runUp wires the all-in-one role: the control plane and one node agent in
// this process, sharing one store. It is the only place that knows them all.
func runUp(ctx context.Context, o *upOptions, out io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("flotilla up needs root: it creates network namespaces and runs Podman as root (try sudo)")
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla: "+format+"\n", args...) }
	logFile, logPath, err := openLog(o.dataDir, o.log)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := roleLogger(logFile, os.Stderr, o.verbose)
	say("logs in %s", logPath)
	if _, _, err := net.ParseCIDR(o.podCIDR); err != nil {
		return fmt.Errorf("--pod-cidr %q: %w", o.podCIDR, err)
	}
	if o.nodeName == "" {
		if o.nodeName, err = os.Hostname(); err != nil {
			return fmt.Errorf("node name: %w (pass --node-name)", err)
		}
	}
	if err := host.SaveSettings(o.dataDir, o.hostSettings()); err != nil {
		return fmt.Errorf("record the host settings: %w", err)
	}
	repo := o.repo
	if repo == "" {
		repo = filepath.Join(o.dataDir, "repo")
		if err := gitsync.InitLocalRepo(repo, examples.Hello()); err != nil && !errors.Is(err, gitsync.ErrRepoExists) {
			return fmt.Errorf("create the example repository: %w", err)
		}
	}
	cp, err := openControlPlane(planeOptions{
		dataDir: o.dataDir, repo: repo, branch: o.branch, path: o.path, interval: o.interval, fetchTimeout: o.gitTimeout, git: o.git,
		apiAddr: o.apiAddr, services: o.services, localVolumeRoot: filepath.Join(o.dataDir, "volumes"), log: log,
		secretsKeyFile: o.secretsKey,
	}, say)
	if err != nil {
		return err
	}
	defer cp.close()

	// The node: its Podman service (or the one given), its pod network,
	// its agent beside the control plane; then the example's image.
	endpoint, err := upAgentEndpoint(o.agentAddr, cp, say)
	if err != nil {
		return err
	}
	if o.podmanSocket == "" {
		say("starting the Podman service ...")
	}
	nodeIP, _ := firstGlobalIPv4() // for load balancer addresses; none: they are not announced
	n, err := host.New(ctx, host.Config{NodeName: o.nodeName, DataDir: o.dataDir, Settings: o.hostSettings(), Store: cp.writes,
		Register: true, NodeIP: nodeIP, LBPool: &cp.lbPool, Services: o.serviceOptions.config(), Metrics: cp.metrics,
		Endpoint: endpoint, Logger: log})
	if err != nil {
		return err
	}
	defer n.Close()
	if o.repo == "" {
		if err := gitsync.RemoveSyncHooks(repo); err != nil { // the repository is watched now
			return err
		}
		say("building image %s if missing ...", examples.HelloImage)
		if err := podman.EnsureBusyboxImage(ctx, n.Runtime(), examples.HelloImage); err != nil {
			return fmt.Errorf("build the example image: %w", err)
		}
	}
	api, err := cp.apiServer(n, nil)
	if err != nil {
		return err
	}

	say("API server at %s; kubeconfig %s", cp.serverURL, cp.kubeconfig)
	say("syncing %s", gitsync.SanitizeURL(repo))
	if scheme, insecure := gitsync.InsecureTransport(repo); insecure {
		say("warning: %s:// fetches without encryption or server authentication: anyone on the path can read the repository or serve other commits; use https:// or ssh://", scheme)
	}
	if o.repo == "" {
		say("the example repository is %s: edit it and `git commit`, and the cluster follows", repo)
	} else if gitsync.IsLocal(repo) {
		say("watching %s: a commit there syncs at once", repo)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return api.Serve(ctx, cp.listener) })
	g.Go(func() error { return cp.whileLeader(ctx) })
	g.Go(func() error { cp.rbac.Run(ctx); return nil })
	g.Go(func() error { return n.Run(ctx) })
	g.Go(func() error { watchProgress(ctx, cp.store, out); return nil })
	err = g.Wait()
	say("stopped; pods keep running, and `flotilla up` resumes from the store")
	return ignoreCanceled(err)
}

// upAgentEndpoint is the in-process agent's endpoint on addr for
// scrapers (Prometheus, curl): it presents the API server's certificate
// and requires a client certificate of the cluster CA, which the
// cluster's RBAC authorizes as the kubelet's (get nodes/metrics, get
// nodes/stats), besides the API server's own. A busy addr is only
// warned about: up runs without the endpoint then (nil).
func upAgentEndpoint(addr string, cp *controlPlane, say func(string, ...any)) (*host.Endpoint, error) {
	if addr == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(cp.certFile, cp.keyFile)
	if err != nil {
		return nil, fmt.Errorf("the agent endpoint's certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.caPEM)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		say("warning: no agent endpoint (metrics, stats) on %s: %v", addr, err)
		return nil, nil
	}
	say("agent endpoint (metrics, stats) at https://%s", ln.Addr())
	return &host.Endpoint{Listener: ln, Authorizer: cp.rbac, TLS: &tls.Config{Certificates: []tls.Certificate{pair},
		MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}}, nil
}

// syncAnswerWait bounds how long POST SyncPath waits for the sync it asked
// for: long enough for a big commit, short of any client's patience. A
// sync still running then (a slow or stalled remote) goes on, and the
// answer says so.
const syncAnswerWait = 20 * time.Second

// syncHandler serves POST SyncPath: ask the syncer's loop for a sync (requests
// merge into one), and answer with the SyncStatus once it has run, or
// after syncAnswerWait with the status so far and a Reconciling condition
// saying a sync is in progress. Refused and failed syncs are in the status
// object; only an unreadable status is an error here.
func syncHandler(s *gitsync.Syncer) http.Handler {
	return syncHandlerWait(s, syncAnswerWait)
}

func syncHandlerWait(s *gitsync.Syncer, wait time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST to sync")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		obj, err := s.Request(ctx)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		data, err := schema.Encode(obj)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
}

// writeStatus writes a Kubernetes Status error.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": msg,
	})
}
