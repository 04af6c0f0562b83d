package apiserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
)

// BenchmarkSecretRead compares reading Secrets through the API with and
// without encryption at rest (issue 11, item 5: ≤ 5% of API latency at
// p99), over HTTPS, both servers on fsynced stores on disk. Requests
// alternate between the two servers so that drift of the machine falls on
// both.
//
//	go test -run '^$' -bench SecretRead -benchtime 2000x ./cluster/apiserver/
func BenchmarkSecretRead(b *testing.B) {
	open := func(b *testing.B, encrypted bool) *env {
		cfg := store.Config{Dir: filepath.Join(b.TempDir(), "db"), Logger: quietLogger()}
		if encrypted {
			k, err := encrypt.NewKey()
			if err != nil {
				b.Fatal(err)
			}
			if cfg.Keys, err = encrypt.NewKeySet(k); err != nil {
				b.Fatal(err)
			}
		}
		st, err := store.Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		// 100 Secrets of 1 KiB each, as a service's TLS key and friends.
		value := []byte(strings.Repeat("k", 1024))
		for i := range 100 {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("s-%03d", i)},
				Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"tls.key": value}}
			if _, err := st.Create(context.Background(), s); err != nil {
				b.Fatal(err)
			}
		}
		return newEnvOn(b, st, nil)
	}
	plain, sealed := open(b, false), open(b, true)
	get := func(b *testing.B, e *env, path string) time.Duration {
		req, err := http.NewRequest("GET", e.url+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		start := time.Now()
		resp, err := e.hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(data), "tls.key") {
			b.Fatalf("GET %s: %d %.200s", path, resp.StatusCode, data)
		}
		return d
	}
	p99 := func(lat []time.Duration) float64 {
		slices.Sort(lat)
		return float64(lat[int(0.99*float64(len(lat)-1))].Microseconds()) / 1000
	}
	for _, tc := range []struct{ name, path string }{
		{"get-secret", "/api/v1/namespaces/default/secrets/s-042"},
		{"list-100-secrets", "/api/v1/namespaces/default/secrets"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var a, s []time.Duration
			for b.Loop() {
				a = append(a, get(b, plain, tc.path))
				s = append(s, get(b, sealed, tc.path))
			}
			pa, ps := p99(a), p99(s)
			b.ReportMetric(pa, "plain-p99-ms")
			b.ReportMetric(ps, "encrypted-p99-ms")
			b.ReportMetric(100*(ps-pa)/pa, "overhead-%")
		})
	}
}
