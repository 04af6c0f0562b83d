package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	corev1 "k8s.io/api/core/v1"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
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
	_, podCIDR, err := net.ParseCIDR(o.podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr %q: %w", o.podCIDR, err)
	}
	if o.nodeName == "" {
		if o.nodeName, err = os.Hostname(); err != nil {
			return fmt.Errorf("node name: %w (pass --node-name)", err)
		}
	}
	if err := saveHostSettings(o.dataDir, o.hostSettings()); err != nil {
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

	// The Podman service (or the one given), and the example's image.
	if o.podmanSocket == "" {
		say("starting the Podman service ...")
	}
	runtime, stopPodman, err := podmanRuntime(ctx, o.dataDir, o.hostSettings(), log)
	if err != nil {
		return err
	}
	defer stopPodman()
	if o.repo == "" {
		if err := gitsync.RemoveSyncHooks(repo); err != nil { // the repository is watched now
			return err
		}
		say("building image %s if missing ...", examples.HelloImage)
		if err := podman.EnsureBusyboxImage(ctx, runtime, examples.HelloImage); err != nil {
			return fmt.Errorf("build the example image: %w", err)
		}
	}

	fabric, err := netfabric.New(netfabric.Config{
		PodCIDR: podCIDR, Bridge: o.bridge, NetNSPrefix: o.netnsPrefix, NFTable: o.nftTable,
		StateDir: filepath.Join(o.dataDir, "net"), Logger: log.With("component", "netfabric"),
	})
	if err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := fabric.Init(ctx); err != nil {
		return fmt.Errorf("pod network: %w", err)
	}
	if err := registerNode(ctx, cp.writes, o.nodeName, podCIDR.String()); err != nil {
		return err
	}
	agent, err := node.New(node.Config{NodeName: o.nodeName, Store: cp.writes, Runtime: runtime, Network: fabric,
		ClusterDNS: fabric.Gateway(), ClusterDomain: o.clusterDomain, PodDir: filepath.Join(o.dataDir, "pods"), Logger: log.With("component", "agent"),
		DiskPressure: o.diskPressure(), Metrics: cp.metrics})
	if err != nil {
		return err
	}
	api, err := cp.apiServer(agentLogs{agent: agent, streams: agent.StreamHandler("")})
	if err != nil {
		return err
	}
	serveAgent, err := upAgentEndpoint(ctx, o.agentAddr, cp, agent, say)
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
	g.Go(func() error { return cp.manager.Run(ctx) })
	g.Go(func() error { cp.rbac.Run(ctx); return nil })
	g.Go(func() error { return agent.Run(ctx) })
	g.Go(serveAgent)
	nodeIP, _ := firstGlobalIPv4() // for load balancer addresses; none: they are not announced
	services := &servicePlane{opts: o.serviceOptions, store: cp.writes, nodeName: o.nodeName, nodeIP: nodeIP, podCIDR: podCIDR,
		bridge: o.bridge, gateway: fabric.Gateway(), nftTable: o.nftTable, lbPool: &cp.lbPool, log: log.With("component", "services")}
	g.Go(func() error { return services.run(ctx) })
	g.Go(func() error { return cp.syncer.Run(ctx) })
	g.Go(func() error { watchProgress(ctx, cp.store, out); return nil })
	err = g.Wait()
	say("stopped; pods keep running, and `flotilla up` resumes from the store")
	return ignoreCanceled(err)
}

// agentLogs serves the API's pod logs and streams from the in-process
// agent.
type agentLogs struct {
	agent   *node.Agent
	streams http.Handler
}

func (a agentLogs) ServeStream(w http.ResponseWriter, r *http.Request, _ string) {
	a.streams.ServeHTTP(w, r)
}

func (a agentLogs) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	return a.agent.PodLogs(ctx, namespace, pod, opts, w)
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
