package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/flotilla-dev/flotilla/schema"
)

// eventSelector is the field selector of the Events about obj, the one
// kubectl describe sends.
func eventSelector(obj schema.Object) string {
	set := fields.Set{"involvedObject.name": obj.GetName(), "involvedObject.uid": string(obj.GetUID())}
	if ns := obj.GetNamespace(); ns != "" {
		set["involvedObject.namespace"] = ns
	}
	return fields.SelectorFromSet(set).String()
}

// describeEvents writes the Events section of describe, oldest first, as
// kubectl lays it out: a repeated Event shows "(xN over AGE)".
func describeEvents(w io.Writer, objs []schema.Object, now time.Time) {
	var evs []*corev1.Event
	for _, o := range objs {
		if ev, ok := o.(*corev1.Event); ok {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		fmt.Fprintln(w, "Events:\t<none>")
		return
	}
	sort.SliceStable(evs, func(i, j int) bool { return lastTime(evs[i]).Before(lastTime(evs[j])) })
	fmt.Fprintln(w, "Events:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t----\t-------")
	for _, ev := range evs {
		age := duration.HumanDuration(now.Sub(lastTime(ev)))
		if ev.Count > 1 && !ev.FirstTimestamp.IsZero() {
			age = fmt.Sprintf("%s (x%d over %s)", age, ev.Count, duration.HumanDuration(now.Sub(ev.FirstTimestamp.Time)))
		}
		from := ev.Source.Component
		if from == "" {
			from = ev.ReportingController
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", ev.Type, ev.Reason, age, from, ev.Message)
	}
	tw.Flush()
}

// lastTime is when ev was last seen.
func lastTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case ev.Series != nil:
		return ev.Series.LastObservedTime.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}
