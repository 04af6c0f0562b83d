package volumes

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// File is one file of an API volume: its content and permission bits.
type File struct {
	Data []byte
	Mode os.FileMode
}

// defaultFileMode is the mode of API volume files when the pod sets none.
const defaultFileMode = 0o644

func fileMode(mode, def *int32) os.FileMode {
	switch {
	case mode != nil:
		return os.FileMode(*mode) & os.ModePerm
	case def != nil:
		return os.FileMode(*def) & os.ModePerm
	}
	return defaultFileMode
}

// keyed is the key/value data of a ConfigMap or a Secret.
type keyed struct {
	data map[string][]byte
}

func configMapData(cm *corev1.ConfigMap) keyed {
	k := keyed{data: map[string][]byte{}}
	for key, v := range cm.BinaryData {
		k.data[key] = v
	}
	for key, v := range cm.Data {
		k.data[key] = []byte(v)
	}
	return k
}

func secretData(s *corev1.Secret) keyed {
	k := keyed{data: map[string][]byte{}}
	for key, v := range s.Data {
		k.data[key] = v
	}
	for key, v := range s.StringData {
		k.data[key] = []byte(v)
	}
	return k
}

// project adds the keys of src (all, or items) to out, as the kubelet does:
// a missing object or key is an error unless optional. src nil means the
// object does not exist.
func project(out map[string]File, volume string, src *keyed, kind, name string, items []corev1.KeyToPath, optional *bool, def *int32) error {
	opt := optional != nil && *optional
	if src == nil {
		if opt {
			return nil
		}
		return configErr(volume, "%s %q not found", kind, name)
	}
	if len(items) == 0 {
		for key, v := range src.data {
			out[key] = File{Data: v, Mode: fileMode(nil, def)}
		}
		return nil
	}
	for _, it := range items {
		v, ok := src.data[it.Key]
		if !ok {
			if opt {
				continue
			}
			return configErr(volume, "%s %q has no key %q", kind, name, it.Key)
		}
		out[it.Path] = File{Data: v, Mode: fileMode(it.Mode, def)}
	}
	return nil
}

// downwardAPIFile is the content of one downwardAPI item.
func downwardAPIFile(volume string, pod *corev1.Pod, it corev1.DownwardAPIVolumeFile) ([]byte, error) {
	if it.ResourceFieldRef != nil {
		return nil, configErr(volume, "downwardAPI item %q: resourceFieldRef is not supported yet (fieldRef is)", it.Path)
	}
	if it.FieldRef == nil {
		return nil, configErr(volume, "downwardAPI item %q has no fieldRef", it.Path)
	}
	fp := it.FieldRef.FieldPath
	switch fp {
	case "metadata.name":
		return []byte(pod.Name), nil
	case "metadata.namespace":
		return []byte(pod.Namespace), nil
	case "metadata.uid":
		return []byte(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	if k, ok := strings.CutPrefix(fp, "metadata.labels['"); ok && strings.HasSuffix(k, "']") {
		return []byte(pod.Labels[strings.TrimSuffix(k, "']")]), nil
	}
	if k, ok := strings.CutPrefix(fp, "metadata.annotations['"); ok && strings.HasSuffix(k, "']") {
		return []byte(pod.Annotations[strings.TrimSuffix(k, "']")]), nil
	}
	return nil, configErr(volume, "downwardAPI item %q: fieldPath %q is not supported in volumes", it.Path, fp)
}

// formatMap writes labels or annotations as the kubelet does: key="value"
// lines, sorted by key.
func formatMap(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = k + "=" + strconv.Quote(m[k])
	}
	return []byte(strings.Join(lines, "\n"))
}

func downwardAPIItems(out map[string]File, volume string, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def *int32) error {
	for _, it := range items {
		data, err := downwardAPIFile(volume, pod, it)
		if err != nil {
			return err
		}
		out[it.Path] = File{Data: data, Mode: fileMode(it.Mode, def)}
	}
	return nil
}

// objectSource reads the ConfigMaps and Secrets of a pod's namespace for
// one Setup; nil result: the object does not exist.
type objectSource interface {
	configMap(name string) (*keyed, error)
	secret(name string) (*keyed, error)
}

// payload computes the files of an API volume from the objects it names.
func payload(v *Volume, pod *corev1.Pod, objs objectSource) (map[string]File, error) {
	out := map[string]File{}
	vs := &v.Source.VolumeSource
	switch v.Kind {
	case KindConfigMap:
		src, err := objs.configMap(vs.ConfigMap.Name)
		if err != nil {
			return nil, err
		}
		err = project(out, v.Name, src, "configmap", vs.ConfigMap.Name, vs.ConfigMap.Items, vs.ConfigMap.Optional, vs.ConfigMap.DefaultMode)
		return out, err
	case KindSecret:
		src, err := objs.secret(vs.Secret.SecretName)
		if err != nil {
			return nil, err
		}
		err = project(out, v.Name, src, "secret", vs.Secret.SecretName, vs.Secret.Items, vs.Secret.Optional, vs.Secret.DefaultMode)
		return out, err
	case KindDownwardAPI:
		return out, downwardAPIItems(out, v.Name, pod, vs.DownwardAPI.Items, vs.DownwardAPI.DefaultMode)
	case KindProjected:
		def := vs.Projected.DefaultMode
		for i, s := range vs.Projected.Sources {
			var err error
			switch {
			case s.ConfigMap != nil:
				var src *keyed
				if src, err = objs.configMap(s.ConfigMap.Name); err == nil {
					err = project(out, v.Name, src, "configmap", s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, def)
				}
			case s.Secret != nil:
				var src *keyed
				if src, err = objs.secret(s.Secret.Name); err == nil {
					err = project(out, v.Name, src, "secret", s.Secret.Name, s.Secret.Items, s.Secret.Optional, def)
				}
			case s.DownwardAPI != nil:
				err = downwardAPIItems(out, v.Name, pod, s.DownwardAPI.Items, def)
			case s.ServiceAccountToken != nil:
				err = configErr(v.Name, "projected source %d: serviceAccountToken is not supported (Flotilla has no service account tokens)", i)
			default:
				err = configErr(v.Name, "projected source %d: only configMap, secret and downwardAPI sources are supported", i)
			}
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("volume %q: %s is not an API volume", v.Name, v.Kind)
}
