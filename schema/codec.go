package schema

import (
	"encoding/json"
	"fmt"

	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
)

func schemaGVK(k Kind) k8sschema.GroupVersionKind {
	return k8sschema.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}
}

// Encode returns the object's JSON as the Kubernetes API writes it, with
// apiVersion and kind set.
func Encode(obj Object) ([]byte, error) {
	k, err := KindOf(obj)
	if err != nil {
		return nil, err
	}
	SetTypeMeta(obj, k)
	return json.Marshal(obj)
}

// Decode parses JSON of the given kind into a new object. Unknown fields are
// ignored here; validation of user input is the CUE schema's job.
func Decode(k Kind, data []byte) (Object, error) {
	obj := k.New()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Kind, err)
	}
	SetTypeMeta(obj, k)
	return obj, nil
}

// DecodeAny parses JSON whose apiVersion and kind say what it is.
func DecodeAny(data []byte) (Object, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	k, ok := KindByAPIVersion(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, fmt.Errorf("decode object: unsupported kind %q (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	return Decode(k, data)
}

// Copy returns a deep copy of obj, as controllers must take before changing
// an object they read from a cache or a store.
func Copy[T Object](obj T) T {
	return obj.DeepCopyObject().(T)
}
