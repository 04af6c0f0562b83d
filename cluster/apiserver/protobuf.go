package apiserver

import (
	"encoding/json"
	"net/http"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/flotilla-dev/flotilla/schema"
)

// protobufType is the media type of Kubernetes' protobuf encoding, which
// kubectl 1.32 and later send their create bodies in.
const protobufType = "application/vnd.kubernetes.protobuf"

// protobufSerializer decodes the built-in kinds Flotilla serves from
// Kubernetes' protobuf envelope (apimachinery's own serializer). Kinds
// of Flotilla's own (SyncStatus) have no protobuf form.
var protobufSerializer = sync.OnceValue(func() *protobuf.Serializer {
	s := runtime.NewScheme()
	for _, k := range schema.Kinds() {
		obj := k.New()
		if _, ok := obj.(interface{ Unmarshal([]byte) error }); !ok {
			continue
		}
		s.AddKnownTypeWithName(k8sschema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}, obj)
	}
	return protobuf.NewSerializer(s, s)
})

// protobufToJSON decodes a protobuf request body of req's kind and gives
// it back as JSON, so that it passes the one strict JSON decode and the
// write pipeline like any other body.
func protobufToJSON(req request, body []byte) ([]byte, error) {
	into := req.kind.New()
	if _, ok := into.(interface{ Unmarshal([]byte) error }); !ok {
		return nil, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			"%s has no protobuf encoding; send application/json", req.kind.Kind)
	}
	obj, _, err := protobufSerializer().Decode(body, nil, into)
	if err != nil {
		return nil, badRequest("the request body is not a valid protobuf %s: %v", req.kind.Kind, err)
	}
	if o, ok := obj.(schema.Object); ok {
		schema.SetTypeMeta(o, req.kind)
	}
	return json.Marshal(obj)
}
