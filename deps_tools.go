//go:build tools

package flotilla

import (
	_ "cuelang.org/go/cue"
	_ "github.com/containers/podman/v4/pkg/bindings"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/go-git/go-git/v5"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "k8s.io/api/apps/v1"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "k8s.io/client-go/util/workqueue"
	_ "k8s.io/apimachinery/pkg/apis/meta/v1"
	_ "sigs.k8s.io/yaml"
)
