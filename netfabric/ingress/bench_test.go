package ingress

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProxy compares small GETs sent straight to an endpoint with the
// same GETs through the proxy (keep-alive on both sides), in requests/s.
func BenchmarkProxy(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	var o objects
	o.webService("web", &backend{name: "bench", srv: srv})
	o.ingresses = append(o.ingresses, ingress("web", 0, rule("web.com", httpPath("/", prefix, "web", 80))))
	p, err := New(Config{HTTPAddr: "127.0.0.1:0", HTTPSAddr: Off, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(o.snapshot())
	front := httptest.NewServer(p.Handler())
	defer front.Close()

	for _, c := range []struct{ name, url string }{{"direct", srv.URL}, {"proxy", front.URL}} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("GET", c.url+"/x", nil)
					req.Host = "web.com"
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
