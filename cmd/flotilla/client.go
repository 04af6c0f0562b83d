package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/schema"
)

// globalFlags are the flags every CLI verb shares.
type globalFlags struct {
	kubeconfig string
	namespace  string
}

// kubeconfigPath resolves the kubeconfig as kubectl does: the flag, then
// $KUBECONFIG, then the default data dir's kubeconfig.yaml.
func (g *globalFlags) kubeconfigPath() string {
	if g.kubeconfig != "" {
		return g.kubeconfig
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0]
	}
	return filepath.Join(apiclient.DefaultDataDir(), "kubeconfig.yaml")
}

// client connects to the cluster named by the kubeconfig.
func (g *globalFlags) client() (*apiclient.Client, error) {
	path := g.kubeconfigPath()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no kubeconfig at %s: is a cluster running? Start one with `flotilla up`, or pass --kubeconfig", path)
	}
	c, err := apiclient.FromKubeconfig(path)
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// target resolves what a verb acts on: the kind the user named, the client,
// and the namespace (none for cluster-scoped kinds).
func (g *globalFlags) target(kindName string) (schema.Kind, *apiclient.Client, string, error) {
	k, ok := schema.LookupKind(kindName)
	if !ok {
		return schema.Kind{}, nil, "", fmt.Errorf("the server doesn't have a resource type %q (try pods, deployments, nodes, services, configmaps)", kindName)
	}
	c, err := g.client()
	if err != nil {
		return schema.Kind{}, nil, "", err
	}
	ns := g.namespace
	if !k.Namespaced {
		ns = ""
	}
	return k, c, ns, nil
}
