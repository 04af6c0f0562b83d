package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// allKinds are what `get all` shows, in kubectl's order.
var allKinds = []string{"pods", "services", "deployments", "replicasets", "statefulsets"}

func newGetCommand(g *globalFlags) *cobra.Command {
	var (
		allNamespaces bool
		output        string
		selector      string
	)
	cmd := &cobra.Command{
		Use:   "get TYPE[,TYPE...] [NAME] | TYPE/NAME...",
		Short: "List objects, or show one",
		Long: `List objects of a type (pods, deployments, replicasets, statefulsets, nodes,
services, endpointslices, configmaps, secrets, pv, pvc, ingresses, syncstatuses, or all), or
the servers of the cluster's Raft group (get servers: role, term, applied index, health), or
show one by name (TYPE NAME, or TYPE/NAME as kubectl takes them).

-o is wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=HEADER:PATH,...
(kubectl's JSONPath: a list is a v1 List, so its objects are .items[*]).`,
		Example: `  flotilla get pods
  flotilla get deploy,rs -o wide
  flotilla get all -A
  flotilla get deploy/hello svc/hello
  flotilla get pod hello-7d9c-x2x4q -o yaml
  flotilla get svc hello -o jsonpath='{.spec.clusterIP}'
  flotilla get pods -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName
  flotilla get servers`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tmpl, isTemplate, err := parseTemplateOutput(output)
			if err != nil {
				return err
			}
			switch {
			case isTemplate:
			case output == "", output == "wide", output == "yaml", output == "json", output == "name":
			default:
				return fmt.Errorf("unknown output format %q: use wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=SPEC", output)
			}
			if args[0] == "servers" || args[0] == "server" {
				c, err := g.client()
				if err != nil {
					return err
				}
				servers, err := c.Servers(cmd.Context())
				if err != nil {
					return err
				}
				return printServers(cmd.OutOrStdout(), c, servers, output)
			}
			if strings.Contains(args[0], "/") {
				return getByTypeName(cmd, g, args, output, tmpl)
			}
			if len(args) > 2 {
				return fmt.Errorf("get TYPE NAME takes one name; for several objects use TYPE/NAME TYPE/NAME")
			}
			var kinds []schema.Kind
			for _, name := range strings.Split(args[0], ",") {
				if name == "all" {
					for _, r := range allKinds {
						k, _ := schema.KindByResource(r)
						kinds = append(kinds, k)
					}
					continue
				}
				k, ok := schema.LookupKind(name)
				if !ok {
					return fmt.Errorf("the server doesn't have a resource type %q (try pods, deployments, nodes, services, configmaps, all)", name)
				}
				kinds = append(kinds, k)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if len(args) == 2 {
				if len(kinds) != 1 {
					return fmt.Errorf("a name goes with one type, not %q", args[0])
				}
				ns := g.namespace
				if !kinds[0].Namespaced {
					ns = ""
				}
				obj, err := c.Get(ctx, kinds[0].Resource, ns, args[1])
				if err != nil {
					return notFoundHint(err, kinds[0], args[1], ns)
				}
				if tmpl != nil {
					return tmpl.print(out, []schema.Object{obj}, true)
				}
				return printObjects(out, kinds[0], []schema.Object{obj}, output, false, "")
			}
			var all []schema.Object
			shown := 0
			for _, k := range kinds {
				opts := store.ListOptions{LabelSelector: selector}
				if k.Namespaced && !allNamespaces {
					opts.Namespace = g.namespace
				}
				objs, _, err := c.List(ctx, k.Resource, opts)
				if err != nil {
					return fmt.Errorf("list %s: %w", k.Resource, err)
				}
				if output == "yaml" || output == "json" || tmpl != nil {
					all = append(all, objs...)
					continue
				}
				if len(objs) == 0 {
					continue
				}
				if shown > 0 {
					fmt.Fprintln(out)
				}
				shown++
				prefix := ""
				if len(kinds) > 1 {
					prefix = strings.ToLower(k.Kind)
					if k.Group != "" {
						prefix += "." + k.Group
					}
					prefix += "/"
				}
				if err := printObjects(out, k, objs, output, allNamespaces && k.Namespaced, prefix); err != nil {
					return err
				}
			}
			if tmpl != nil {
				return tmpl.print(out, all, false)
			}
			if output == "yaml" || output == "json" {
				return printList(out, all, output)
			}
			if shown == 0 {
				if allNamespaces {
					fmt.Fprintln(cmd.ErrOrStderr(), "No resources found")
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "No resources found in %s namespace.\n", g.namespace)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list across all namespaces")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=HEADER:PATH,...")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. app=hello")
	return cmd
}

// printObjects prints objects of one kind in the chosen format.
func printObjects(w io.Writer, k schema.Kind, objs []schema.Object, output string, allNamespaces bool, prefix string) error {
	switch output {
	case "yaml", "json":
		if len(objs) == 1 {
			return printOne(w, objs[0], output)
		}
		return printList(w, objs, output)
	case "name":
		for _, o := range objs {
			fmt.Fprintf(w, "%s/%s\n", strings.ToLower(k.Kind), o.GetName())
		}
		return nil
	}
	t := table{allNamespaces: allNamespaces, wide: output == "wide", now: time.Now()}
	return t.print(w, k, prefix, objs)
}

func printOne(w io.Writer, obj schema.Object, output string) error {
	data, err := json.MarshalIndent(obj, "", "    ")
	if err != nil {
		return err
	}
	if output == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(w, strings.TrimRight(string(data), "\n"))
	return err
}

// printList prints objects as a v1 List, as kubectl does for several.
func printList(w io.Writer, objs []schema.Object, output string) error {
	items := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		data, err := json.Marshal(o)
		if err != nil {
			return err
		}
		items = append(items, data)
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": items}
	data, err := json.MarshalIndent(list, "", "    ")
	if err != nil {
		return err
	}
	if output == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(w, strings.TrimRight(string(data), "\n"))
	return err
}

// notFoundHint turns a store error into kubectl's wording.
func notFoundHint(err error, k schema.Kind, name, ns string) error {
	if isNotFound(err) {
		if k.Namespaced {
			return fmt.Errorf("%s %q not found in namespace %q", k.Resource, name, ns)
		}
		return fmt.Errorf("%s %q not found", k.Resource, name)
	}
	return err
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// getByTypeName is `get TYPE/NAME...`: each object, printed as a list of
// its kind would be (kubectl prints them together under one format).
func getByTypeName(cmd *cobra.Command, g *globalFlags, args []string, output string, tmpl *templateOutput) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	var objs []schema.Object
	var kinds []schema.Kind
	for _, arg := range args {
		typ, name, ok := strings.Cut(arg, "/")
		if !ok || typ == "" || name == "" {
			return fmt.Errorf("%q: there is no need to give a resource type as a separate argument when passing arguments in TYPE/NAME form", arg)
		}
		k, found := schema.LookupKind(typ)
		if !found {
			return fmt.Errorf("the server doesn't have a resource type %q (try pods, deployments, nodes, services, configmaps)", typ)
		}
		ns := g.namespace
		if !k.Namespaced {
			ns = ""
		}
		obj, err := c.Get(cmd.Context(), k.Resource, ns, name)
		if err != nil {
			return notFoundHint(err, k, name, ns)
		}
		objs = append(objs, obj)
		kinds = append(kinds, k)
	}
	out := cmd.OutOrStdout()
	switch {
	case tmpl != nil:
		return tmpl.print(out, objs, len(objs) == 1)
	case output == "yaml" || output == "json":
		if len(objs) == 1 {
			return printOne(out, objs[0], output)
		}
		return printList(out, objs, output)
	}
	// Consecutive objects of one kind share a table, as in kubectl.
	for i := 0; i < len(objs); {
		j := i + 1
		for j < len(objs) && kinds[j].Resource == kinds[i].Resource {
			j++
		}
		if i > 0 {
			fmt.Fprintln(out)
		}
		prefix := ""
		if len(args) > 1 && output != "name" {
			prefix = strings.ToLower(kinds[i].Kind)
			if kinds[i].Group != "" {
				prefix += "." + kinds[i].Group
			}
			prefix += "/"
		}
		if err := printObjects(out, kinds[i], objs[i:j], output, false, prefix); err != nil {
			return err
		}
		i = j
	}
	return nil
}
