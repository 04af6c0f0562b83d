package apiserver

import (
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/flotilla-dev/flotilla/cluster/events"
	"github.com/flotilla-dev/flotilla/schema"
)

// Events are stored once, as core/v1 Events, and served under
// events.k8s.io/v1 too (what client-go's tools/events and `kubectl events`
// of newer releases read), converted on the way out. That version is
// read-only here (get, list, watch); Events are written as core/v1.

const eventsGroup = "events.k8s.io"

// eventsV1Route is the core Event kind for a request under
// /apis/events.k8s.io/v1/…/events.
func eventsV1Route(group, ver string, rest []string) (schema.Kind, bool) {
	if group != eventsGroup || ver != "v1" || len(rest) == 0 {
		return schema.Kind{}, false
	}
	i := 0
	if rest[0] == "namespaces" && len(rest) >= 3 {
		i = 2
	}
	if rest[i] != "events" {
		return schema.Kind{}, false
	}
	return schema.KindByResource("events")
}

// eventsV1Resources is the discovery of events.k8s.io/v1.
func eventsV1Resources() metav1.APIResourceList {
	return metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: eventsGroup + "/v1",
		APIResources: []metav1.APIResource{{Name: "events", SingularName: "event", Namespaced: true, Kind: "Event",
			Verbs: metav1.Verbs{"get", "list", "watch"}, ShortNames: []string{"ev"}}},
	}
}

// encode is obj's JSON in the version the request asked for.
func (q request) encode(obj schema.Object) ([]byte, error) {
	if ev, ok := obj.(*corev1.Event); ok && q.eventsV1 {
		return json.Marshal(events.ToV1(ev))
	}
	return schema.Encode(obj)
}

// apiVersion is the version the request is served in.
func (q request) apiVersion() string {
	if q.eventsV1 {
		return eventsGroup + "/v1"
	}
	return q.kind.APIVersion()
}

// v1FieldSelector rewrites an events.k8s.io/v1 field selector
// (regarding.name=…) into the core/v1 labels the server filters by.
func v1FieldSelector(sel string) (string, error) {
	if strings.TrimSpace(sel) == "" {
		return sel, nil
	}
	parsed, err := fields.ParseSelector(sel)
	if err != nil {
		return "", badRequest("invalid field selector: %v", err)
	}
	out, err := parsed.Transform(func(f, v string) (string, string, error) {
		core, ok := events.V1FieldLabels[f]
		if !ok {
			return "", "", badRequest("field label not supported: %s", f)
		}
		return core, v, nil
	})
	if err != nil {
		return "", err
	}
	return out.String(), nil
}
