package admission_test

import (
	"errors"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/admission"
	"github.com/flotilla-dev/flotilla/schema"
)

// FuzzDecode feeds arbitrary bodies to the strict decoder of every kind:
// nothing panics, and every refusal is a 400 or a 422 Status.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"name":"w"},"spec":{"replicas":1.5}}`,
		`{"metadata":{"name":"w","name":"x"},"spec":{"replica":3}}`,
		`{"spec":{"containers":[{"name":"a","resources":{"limits":{"memory":"lots"}}}]}}`,
		`{"data":{"a":"!!"},"stringData":{"b":1}}`,
		`[1,2]`, `null`, `{"kind":`,
	} {
		f.Add(uint8(0), s)
	}
	kinds := schema.Kinds()
	f.Fuzz(func(t *testing.T, k uint8, body string) {
		kind := kinds[int(k)%len(kinds)]
		obj, _, err := admission.Decode(kind, []byte(body), admission.Strict)
		if err == nil {
			if obj == nil {
				t.Fatal("no object and no error")
			}
			return
		}
		var ae *admission.Error
		if !errors.As(err, &ae) || (ae.Status().Code != 400 && ae.Status().Code != 422) || ae.Status().Details == nil {
			t.Fatalf("%s %q: %v", kind.Kind, body, err)
		}
	})
}
