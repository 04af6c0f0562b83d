package apiserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/flotilla-dev/flotilla/schema"
)

const (
	// protobufType is the media type of Kubernetes' protobuf encoding, which
	// kubectl 1.32 and later send their create bodies in, and client-go
	// asks answers in when configured to.
	protobufType = "application/vnd.kubernetes.protobuf"
	// protobufWatchType is the media type of a protobuf watch stream:
	// length-delimited WatchEvents.
	protobufWatchType = protobufType + ";stream=watch"
)

// protobufScheme knows the built-in kinds and their lists, from the API
// groups' own registration. Kinds of Flotilla's own (SyncStatus) have no
// protobuf form and are not in it.
var protobufScheme = sync.OnceValue(func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme, networkingv1.AddToScheme,
		rbacv1.AddToScheme, storagev1.AddToScheme, coordinationv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("apiserver: register API types: %v", err))
		}
	}
	return s
})

// protobufSerializer is apimachinery's protobuf serializer (with the
// envelope) over protobufScheme.
var protobufSerializer = sync.OnceValue(func() *protobuf.Serializer {
	return protobuf.NewSerializer(protobufScheme(), protobufScheme())
})

// protobufRaw encodes watch events without the envelope, as Kubernetes'
// stream serializer does.
var protobufRaw = sync.OnceValue(func() *protobuf.RawSerializer {
	return protobuf.NewRawSerializer(protobufScheme(), protobufScheme())
})

func gvk(k schema.Kind) k8sschema.GroupVersionKind {
	return k8sschema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}
}

// hasProtobuf says whether kind k has a protobuf encoding.
func hasProtobuf(k schema.Kind) bool { return protobufScheme().Recognizes(gvk(k)) }

// protobufToJSON decodes a protobuf request body of req's kind and gives
// it back as JSON, so that it passes the one strict JSON decode and the
// write pipeline like any other body.
func protobufToJSON(req request, body []byte) ([]byte, error) {
	if !hasProtobuf(req.kind) {
		return nil, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"%s has no protobuf encoding; send application/json", req.kind.Kind)
	}
	obj, _, err := protobufSerializer().Decode(body, nil, req.kind.New())
	if err != nil {
		return nil, badRequest("the request body is not a valid protobuf %s: %v", req.kind.Kind, err)
	}
	if o, ok := obj.(schema.Object); ok {
		schema.SetTypeMeta(o, req.kind)
	}
	return json.Marshal(obj)
}

// answerType is the media type to answer a request for objects of kind k
// in: application/json or protobufType, by the Accept header; protobuf
// only for kinds that have it. An Accept that allows neither is 406.
func answerType(r *http.Request, k schema.Kind) (string, error) {
	offers := []string{"application/json"}
	if hasProtobuf(k) {
		offers = append(offers, protobufType)
	}
	mt := negotiate(r, offers...)
	if mt == "" {
		return "", notAcceptable(r, offers...)
	}
	return mt, nil
}

// encodeProtobuf is obj in Kubernetes' protobuf envelope.
func encodeProtobuf(k schema.Kind, obj runtime.Object) ([]byte, error) {
	obj.GetObjectKind().SetGroupVersionKind(gvk(k))
	var buf bytes.Buffer
	if err := protobufSerializer().Encode(obj, &buf); err != nil {
		return nil, fmt.Errorf("encode %s as protobuf: %w", k.Kind, err)
	}
	return buf.Bytes(), nil
}

// protobufList is the <Kind>List of objs at revision rev, in protobuf.
func protobufList(k schema.Kind, objs []schema.Object, rev int64) ([]byte, error) {
	lk := gvk(k)
	lk.Kind += "List"
	list, err := protobufScheme().New(lk)
	if err != nil {
		return nil, fmt.Errorf("no list type for %s: %w", k.Kind, err)
	}
	items := make([]runtime.Object, len(objs))
	for i, o := range objs {
		items[i] = o
	}
	if err := meta.SetList(list, items); err != nil {
		return nil, fmt.Errorf("build %s: %w", lk.Kind, err)
	}
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	lm.SetResourceVersion(strconv.FormatInt(rev, 10))
	list.GetObjectKind().SetGroupVersionKind(lk)
	var buf bytes.Buffer
	if err := protobufSerializer().Encode(list, &buf); err != nil {
		return nil, fmt.Errorf("encode %s as protobuf: %w", lk.Kind, err)
	}
	return buf.Bytes(), nil
}

// protobufEvent is one frame's content of a protobuf watch stream.
func protobufEvent(k schema.Kind, typ string, obj schema.Object) ([]byte, error) {
	data, err := encodeProtobuf(k, obj)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	ev := &metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: data}}
	if err := protobufRaw().Encode(ev, &buf); err != nil {
		return nil, fmt.Errorf("encode a watch event as protobuf: %w", err)
	}
	return buf.Bytes(), nil
}

func writeProtobuf(w http.ResponseWriter, code int, data []byte) {
	w.Header().Set("Content-Type", protobufType)
	w.WriteHeader(code)
	_, _ = w.Write(data)
}
