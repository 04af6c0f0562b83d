package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/schema"
)

// table prints objects of one kind as kubectl does, from the API server's
// own server-side printing: upper-case headers, aligned columns, NAMESPACE
// first when listing all namespaces, the wide columns with -o wide.
type table struct {
	allNamespaces bool
	wide          bool
	now           time.Time
}

// print writes a table of objects of one kind; prefix ("deployment.apps/")
// is put before names when several kinds are shown, as `get all` does.
func (t table) print(w io.Writer, k schema.Kind, prefix string, objs []schema.Object) error {
	tbl := apiserver.Table(k, objs, t.now)
	var headers []string
	if t.allNamespaces {
		headers = append(headers, "NAMESPACE")
	}
	var cols []int
	for i, c := range tbl.ColumnDefinitions {
		if c.Priority == 0 || t.wide {
			cols = append(cols, i)
			headers = append(headers, strings.ToUpper(c.Name))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for r, row := range tbl.Rows {
		var cells []string
		if t.allNamespaces {
			cells = append(cells, objs[r].GetNamespace())
		}
		for _, i := range cols {
			cell := fmt.Sprint(row.Cells[i])
			if i == 0 {
				cell = prefix + cell
			}
			cells = append(cells, cell)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func podStatus(p *corev1.Pod) string { return apiserver.PodStatus(p) }

func containerColumns(spec corev1.PodSpec) (names, images string) {
	var n, i []string
	for _, c := range spec.Containers {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func orNone(s string) string { return orDefault(s, "<none>") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func shortCommit(c string) string {
	if len(c) > 7 {
		return c[:7]
	}
	return orNone(c)
}
