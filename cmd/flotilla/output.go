package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"k8s.io/client-go/util/jsonpath"

	"github.com/flotilla-dev/flotilla/schema"
)

// templateOutput is `-o jsonpath=TEMPLATE` or `-o custom-columns=SPEC`,
// kubectl's template outputs, with client-go's JSONPath.
type templateOutput struct {
	jsonPath string   // -o jsonpath: the template as given
	headers  []string // -o custom-columns: the columns' headers
	columns  []*jsonpath.JSONPath
}

// parseTemplateOutput reads a template output format; ok is false for
// the other formats.
func parseTemplateOutput(output string) (t *templateOutput, ok bool, err error) {
	kind, arg, _ := strings.Cut(output, "=")
	switch kind {
	case "jsonpath":
		if arg == "" {
			return nil, true, fmt.Errorf("-o jsonpath needs a template, e.g. -o jsonpath='{.items[*].metadata.name}'")
		}
		if _, err := newJSONPath(arg); err != nil {
			return nil, true, err
		}
		return &templateOutput{jsonPath: arg}, true, nil
	case "custom-columns":
		if arg == "" {
			return nil, true, fmt.Errorf("-o custom-columns needs columns, e.g. -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName")
		}
		t := &templateOutput{}
		for _, col := range strings.Split(arg, ",") {
			header, expr, found := strings.Cut(col, ":")
			if !found || header == "" || expr == "" {
				return nil, true, fmt.Errorf("custom-columns %q: each column is HEADER:JSONPATH", col)
			}
			jp, err := newJSONPath(relaxedJSONPath(expr))
			if err != nil {
				return nil, true, err
			}
			t.headers = append(t.headers, header)
			t.columns = append(t.columns, jp)
		}
		return t, true, nil
	}
	return nil, false, nil
}

func newJSONPath(tmpl string) (*jsonpath.JSONPath, error) {
	jp := jsonpath.New("output").AllowMissingKeys(true)
	if err := jp.Parse(tmpl); err != nil {
		return nil, fmt.Errorf("bad JSONPath template %q: %w", tmpl, err)
	}
	return jp, nil
}

// relaxedJSONPath is kubectl's: ".spec.x", "spec.x" and "{.spec.x}" all
// name the field.
func relaxedJSONPath(expr string) string {
	if strings.HasPrefix(expr, "{") {
		return expr
	}
	if !strings.HasPrefix(expr, ".") {
		expr = "." + expr
	}
	return "{" + expr + "}"
}

// generic is obj as JSON values, what JSONPath walks (field names as on
// the wire).
func generic(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(data, &out)
}

// print prints objs: one object (single) is the template's data as
// kubectl does for `get TYPE NAME`; several are a v1 List.
func (t *templateOutput) print(w io.Writer, objs []schema.Object, single bool) error {
	if t.jsonPath != "" {
		var data any
		var err error
		if single && len(objs) == 1 {
			data, err = generic(objs[0])
		} else {
			data, err = generic(map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": objs})
		}
		if err != nil {
			return err
		}
		jp, err := newJSONPath(t.jsonPath)
		if err != nil {
			return err
		}
		return jp.Execute(w, data)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.headers, "\t"))
	for _, o := range objs {
		data, err := generic(o)
		if err != nil {
			return err
		}
		cells := make([]string, len(t.columns))
		for i, jp := range t.columns {
			results, err := jp.FindResults(data)
			if err != nil {
				return err
			}
			var vals []string
			for _, rs := range results {
				for _, r := range rs {
					var b bytes.Buffer
					if err := jp.PrintResults(&b, []reflect.Value{r}); err != nil {
						return err
					}
					vals = append(vals, b.String())
				}
			}
			cells[i] = strings.Join(vals, ",")
			if cells[i] == "" {
				cells[i] = "<none>"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
