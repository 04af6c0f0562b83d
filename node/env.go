package node

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// configError is a container configuration the agent cannot build yet (a
// missing ConfigMap, Secret or key): the container waits with reason
// CreateContainerConfigError and the agent retries.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// envResolver reads ConfigMaps and Secrets from the store, each once per
// pod sync.
type envResolver struct {
	st         store.Interface
	namespace  string
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func newEnvResolver(st store.Interface, namespace string) *envResolver {
	return &envResolver{st: st, namespace: namespace, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
}

// configMap returns the ConfigMap or nil when it does not exist.
func (r *envResolver) configMap(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	if cm, ok := r.configMaps[name]; ok {
		return cm, nil
	}
	obj, err := r.st.Get(ctx, "configmaps", r.namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		r.configMaps[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read configmap %s/%s: %w", r.namespace, name, err)
	}
	cm, _ := obj.(*corev1.ConfigMap)
	r.configMaps[name] = cm
	return cm, nil
}

// secret returns the Secret or nil when it does not exist.
func (r *envResolver) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	if s, ok := r.secrets[name]; ok {
		return s, nil
	}
	obj, err := r.st.Get(ctx, "secrets", r.namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		r.secrets[name] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s/%s: %w", r.namespace, name, err)
	}
	s, _ := obj.(*corev1.Secret)
	r.secrets[name] = s
	return s, nil
}

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

// resolve returns the container's environment: envFrom sources in order,
// then env entries (which win), with $(VAR) references expanded as
// Kubernetes does. A missing non-optional source or key is a *configError.
func (r *envResolver) resolve(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP, hostIP string) (map[string]string, error) {
	env := map[string]string{}
	for _, src := range c.EnvFrom {
		optional := false
		var data map[string]string
		switch {
		case src.ConfigMapRef != nil:
			optional = src.ConfigMapRef.Optional != nil && *src.ConfigMapRef.Optional
			cm, err := r.configMap(ctx, src.ConfigMapRef.Name)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				if optional {
					continue
				}
				return nil, &configError{fmt.Sprintf("configmap %q not found", src.ConfigMapRef.Name)}
			}
			data = cm.Data
		case src.SecretRef != nil:
			optional = src.SecretRef.Optional != nil && *src.SecretRef.Optional
			s, err := r.secret(ctx, src.SecretRef.Name)
			if err != nil {
				return nil, err
			}
			if s == nil {
				if optional {
					continue
				}
				return nil, &configError{fmt.Sprintf("secret %q not found", src.SecretRef.Name)}
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
			for k, v := range s.StringData {
				data[k] = v
			}
		}
		for k, v := range data {
			env[src.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expand(e.Value, env)
			continue
		}
		v, ok, err := r.valueFrom(ctx, pod, e.ValueFrom, podIP, hostIP)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			env[e.Name] = v
		}
	}
	return env, nil
}

// valueFrom resolves one env source; ok is false for an optional missing one.
func (r *envResolver) valueFrom(ctx context.Context, pod *corev1.Pod, src *corev1.EnvVarSource, podIP, hostIP string) (string, bool, error) {
	switch {
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := r.configMap(ctx, ref.Name)
		if err != nil {
			return "", false, err
		}
		if cm == nil {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("configmap %q not found", ref.Name)}
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional {
			return "", false, nil
		}
		return "", false, &configError{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, r.namespace, ref.Name)}
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := r.secret(ctx, ref.Name)
		if err != nil {
			return "", false, err
		}
		if s == nil {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("secret %q not found", ref.Name)}
		}
		if v, ok := secretValue(s, ref.Key); ok {
			return v, true, nil
		}
		if optional {
			return "", false, nil
		}
		return "", false, &configError{fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, r.namespace, ref.Name)}
	case src.FieldRef != nil:
		switch src.FieldRef.FieldPath {
		case "metadata.name":
			return pod.Name, true, nil
		case "metadata.namespace":
			return pod.Namespace, true, nil
		case "metadata.uid":
			return string(pod.UID), true, nil
		case "spec.nodeName":
			return pod.Spec.NodeName, true, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, true, nil
		case "status.podIP":
			return podIP, true, nil
		case "status.hostIP":
			return hostIP, true, nil
		}
		if k, ok := strings.CutPrefix(src.FieldRef.FieldPath, "metadata.labels['"); ok {
			return pod.Labels[strings.TrimSuffix(k, "']")], true, nil
		}
		if k, ok := strings.CutPrefix(src.FieldRef.FieldPath, "metadata.annotations['"); ok {
			return pod.Annotations[strings.TrimSuffix(k, "']")], true, nil
		}
		return "", false, &configError{fmt.Sprintf("unsupported fieldRef %q", src.FieldRef.FieldPath)}
	}
	return "", false, &configError{"unsupported env valueFrom (only configMapKeyRef, secretKeyRef and fieldRef)"}
}

// expand replaces $(NAME) with env's value when NAME is defined, and $$(…)
// with the literal $(…), as Kubernetes does for env, command and args.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
