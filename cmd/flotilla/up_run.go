package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/examples"
	"github.com/flotilla-dev/flotilla/gitsync"
	"github.com/flotilla-dev/flotilla/netfabric"
	"github.com/flotilla-dev/flotilla/node"
	"github.com/flotilla-dev/flotilla/node/podman"
	"github.com/flotilla-dev/flotilla/reconciler"
	"github.com/flotilla-dev/flotilla/schema"
)

// runUp wires the all-in-one role: every part of a one-node cluster in this
// process, sharing one store. It is the only place that knows them all.
func runUp(ctx context.Context, o *upOptions, out io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("flotilla up needs root: it creates network namespaces and runs Podman as root (try sudo)")
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "flotilla: "+format+"\n", args...) }
	logPath := filepath.Join(o.dataDir, "flotilla.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open the log: %w", err)
	}
	defer logFile.Close()
	log := o.logger(logFile, os.Stderr)
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

	// The API listener first: a port in use should fail before anything starts.
	ln, err := net.Listen("tcp", o.apiAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another flotilla running? pass --api-addr)", o.apiAddr, err)
	}
	defer ln.Close()

	st, err := store.Open(store.Config{Dir: filepath.Join(o.dataDir, "db"), Logger: log.With("component", "store")})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	say("store at %s, revision %d", filepath.Join(o.dataDir, "db"), st.Revision())

	token, err := ensureSecret(o.dataDir, "token")
	if err != nil {
		return err
	}
	webhookSecret, err := ensureSecret(o.dataDir, "webhook-secret")
	if err != nil {
		return err
	}
	host := listenHost(ln.Addr().String())
	caPEM, certFile, keyFile, err := apiserver.EnsureCerts(filepath.Join(o.dataDir, "tls"), []string{host})
	if err != nil {
		return fmt.Errorf("TLS certificates: %w", err)
	}
	serverURL := "https://" + ln.Addr().String()
	kubeconfig := filepath.Join(o.dataDir, "kubeconfig.yaml")
	if err := apiclient.WriteKubeconfig(kubeconfig, serverURL, caPEM, token); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}

	// The Podman service (or the one given), and the example's image.
	var runtime *podman.Runtime
	if o.podmanSocket != "" {
		if runtime, err = podman.Connect(ctx, o.podmanSocket); err != nil {
			return fmt.Errorf("connect to Podman at %s: %w", o.podmanSocket, err)
		}
	} else {
		say("starting the Podman service ...")
		svc, err := podman.StartService(ctx, podman.ServiceConfig{
			DataDir: filepath.Join(o.dataDir, "podman"), Root: o.podmanRoot, RunRoot: o.podmanRunRoot, StorageDriver: o.podmanDriver,
			Logger: log.With("component", "podman"),
		})
		if err != nil {
			return fmt.Errorf("start Podman: %w (is podman installed? `make deps` installs it)", err)
		}
		defer svc.Stop()
		runtime = svc.Runtime
	}

	// The repository: the one given, or a copy of examples/hello.
	repo := o.repo
	if repo == "" {
		repo = filepath.Join(o.dataDir, "repo")
		if err := gitsync.InitLocalRepo(repo, examples.Hello()); err != nil && !errors.Is(err, gitsync.ErrRepoExists) {
			return fmt.Errorf("create the example repository: %w", err)
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary for the post-commit hook: %w", err)
		}
		hook := gitsync.ShellQuote(exe) + " sync --quiet --kubeconfig " + gitsync.ShellQuote(kubeconfig)
		if err := gitsync.InstallPostCommitHook(repo, hook); err != nil {
			return fmt.Errorf("install the post-commit hook: %w", err)
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
	agent, err := node.New(node.Config{NodeName: o.nodeName, Store: st, Runtime: runtime, Network: fabric, Logger: log.With("component", "agent")})
	if err != nil {
		return err
	}
	manager, err := reconciler.New(reconciler.Config{Store: st, Logger: log.With("component", "reconciler")})
	if err != nil {
		return err
	}
	validator, err := schema.NewValidator()
	if err != nil {
		return fmt.Errorf("load the CUE schema: %w", err)
	}
	syncer, err := gitsync.New(gitsync.Config{
		URL: repo, Branch: o.branch, Path: o.path, Interval: o.interval,
		WebhookSecret: webhookSecret, WorkDir: filepath.Join(o.dataDir, "gitsync"),
		Store: st, Loader: validator, Logger: log.With("component", "gitsync"),
	})
	if err != nil {
		return err
	}
	api, err := apiserver.New(apiserver.Config{
		Store: st, Token: token, TLSCertFile: certFile, TLSKeyFile: keyFile,
		Logs: agentLogs{agent}, Logger: log.With("component", "apiserver"),
		Extra: map[string]http.Handler{apiserver.SyncPath: syncHandler(syncer, st)},
		Open:  map[string]http.Handler{"/hooks/git": syncer.WebhookHandler()},
	})
	if err != nil {
		return err
	}

	say("API server at %s; kubeconfig %s", serverURL, kubeconfig)
	say("syncing %s", gitsync.SanitizeURL(repo))
	if o.repo == "" {
		say("the example repository is %s: edit it and `git commit`, and the cluster follows", repo)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return api.Serve(ctx, ln) })
	g.Go(func() error { return manager.Run(ctx) })
	g.Go(func() error { return agent.Run(ctx) })
	g.Go(func() error { return syncer.Run(ctx) })
	g.Go(func() error { watchProgress(ctx, st, out); return nil })
	err = g.Wait()
	say("stopped; pods keep running, and `flotilla up` resumes from the store")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// agentLogs serves the API's pod logs from the in-process agent.
type agentLogs struct{ agent *node.Agent }

func (a agentLogs) PodLogs(ctx context.Context, namespace, pod string, opts apiserver.LogOptions, w io.Writer) error {
	return a.agent.PodLogs(ctx, namespace, pod, node.LogOptions{Container: opts.Container, Follow: opts.Follow, TailLines: opts.TailLines}, w)
}

// syncHandler serves POST SyncPath: sync now, answer with the SyncStatus.
func syncHandler(s *gitsync.Syncer, st store.Interface) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "POST to sync")
			return
		}
		// Refused and failed syncs are in the status object; only a missing
		// status is an error here.
		_, _ = s.SyncNow(r.Context())
		obj, err := st.Get(r.Context(), "syncstatuses", "", schema.SyncStatusName)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", "sync ran but left no status: "+err.Error())
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
