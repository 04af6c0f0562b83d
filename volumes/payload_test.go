package volumes

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// mapObjects is an objectSource over fixed objects.
type mapObjects struct {
	cms  map[string]*corev1.ConfigMap
	secs map[string]*corev1.Secret
}

func (m mapObjects) configMap(name string) (*keyed, error) {
	cm, ok := m.cms[name]
	if !ok {
		return nil, nil
	}
	k := configMapData(cm)
	return &k, nil
}

func (m mapObjects) secret(name string) (*keyed, error) {
	s, ok := m.secs[name]
	if !ok {
		return nil, nil
	}
	k := secretData(s)
	return &k, nil
}

func i32(v int32) *int32 { return &v }
func yes() *bool         { t := true; return &t }

func TestPayload(t *testing.T) {
	objs := mapObjects{
		cms: map[string]*corev1.ConfigMap{"cfg": {ObjectMeta: metav1.ObjectMeta{Name: "cfg"},
			Data: map[string]string{"a": "1", "b": "2"}, BinaryData: map[string][]byte{"bin": {0, 1}}}},
		secs: map[string]*corev1.Secret{"sec": {ObjectMeta: metav1.ObjectMeta{Name: "sec"},
			Data: map[string][]byte{"password": []byte("pw")}, StringData: map[string]string{"user": "me"}}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns", UID: "u1",
		Labels: map[string]string{"b": "2", "a": `say "hi"`}, Annotations: map[string]string{"note": "x"}}}
	cmRef := corev1.LocalObjectReference{Name: "cfg"}
	missing := corev1.LocalObjectReference{Name: "missing"}
	for _, tc := range []struct {
		name string
		vs   corev1.VolumeSource
		want map[string]File
		err  string
	}{
		{name: "configMap, every key, default mode", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef}},
			want: map[string]File{"a": {[]byte("1"), 0o644}, "b": {[]byte("2"), 0o644}, "bin": {[]byte{0, 1}, 0o644}}},
		{name: "configMap items, modes", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef, DefaultMode: i32(0o600),
			Items: []corev1.KeyToPath{{Key: "a", Path: "dir/a.txt", Mode: i32(0o400)}, {Key: "b", Path: "b.txt"}}}},
			want: map[string]File{"dir/a.txt": {[]byte("1"), 0o400}, "b.txt": {[]byte("2"), 0o600}}},
		{name: "configMap missing", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: missing}},
			err: `configmap "missing" not found`},
		{name: "configMap missing, optional", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: missing, Optional: yes()}},
			want: map[string]File{}},
		{name: "configMap missing key", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef,
			Items: []corev1.KeyToPath{{Key: "zz", Path: "zz"}}}}, err: `configmap "cfg" has no key "zz"`},
		{name: "configMap missing key, optional", vs: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: cmRef, Optional: yes(),
			Items: []corev1.KeyToPath{{Key: "zz", Path: "zz"}, {Key: "a", Path: "a"}}}}, want: map[string]File{"a": {[]byte("1"), 0o644}}},
		{name: "secret data and stringData", vs: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: i32(0o400)}},
			want: map[string]File{"password": {[]byte("pw"), 0o400}, "user": {[]byte("me"), 0o400}}},
		{name: "secret missing", vs: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope"}}, err: `secret "nope" not found`},
		{name: "downwardAPI", vs: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "note", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['note']"}, Mode: i32(0o400)},
		}}}, want: map[string]File{"name": {[]byte("web-0"), 0o644}, "labels": {[]byte("a=\"say \\\"hi\\\"\"\nb=\"2\""), 0o644}, "note": {[]byte("x"), 0o400}}},
		{name: "downwardAPI resourceFieldRef", vs: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "cpu", ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}}}}, err: "resourceFieldRef is not supported"},
		{name: "downwardAPI status field", vs: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "ip", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}}, err: "not supported in volumes"},
		{name: "projected", vs: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: i32(0o440), Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: cmRef, Items: []corev1.KeyToPath{{Key: "a", Path: "cfg/a"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Items: []corev1.KeyToPath{{Key: "password", Path: "pw"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: missing, Optional: yes()}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "ns", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
		}}}, want: map[string]File{"cfg/a": {[]byte("1"), 0o440}, "pw": {[]byte("pw"), 0o440}, "ns": {[]byte("ns"), 0o440}}},
		{name: "projected token", vs: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}, err: "serviceAccountToken is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod(vol("v", tc.vs))
			p.ObjectMeta = pod.ObjectMeta
			plan, err := PlanPod("/r", p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := payload(&plan.Volumes[0], p, objs)
			if tc.err != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a ConfigError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("payload = %v\nwant      %v", got, tc.want)
			}
		})
	}
}
