package apiserver_test

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/internal/testkit"
)

// Neither the server's log (at debug level) nor the audit log carries a
// Secret's values, whether the request succeeds or is refused.
func TestSecretValuesNotLogged(t *testing.T) {
	var logs, audit testkit.Buffer
	st := store.MemoryFor(t)
	aud := apiserver.NewAuditor(&audit, quietLogger())
	t.Cleanup(aud.Close)
	e := newEnvWith(t, st, func(c *apiserver.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Audit = aud
	})
	secret := "pw-" + strings.Repeat("q7", 8)
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	base := "/api/v1/namespaces/default/secrets"
	for _, tc := range []struct {
		name, method, path, body string
		ok                       bool
	}{
		{"create", "POST", base, fmt.Sprintf(`{"metadata":{"name":"db"},"data":{"password":%q}}`, b64), true},
		{"get", "GET", base + "/db", "", true},
		{"list", "GET", base, "", true},
		{"update", "PUT", base + "/db", fmt.Sprintf(`{"metadata":{"name":"db"},"data":{"password":%q,"again":%q}}`, b64, b64), true},
		{"not base64", "POST", base, fmt.Sprintf(`{"metadata":{"name":"bad"},"data":{"password":%q}}`, secret+"!"), false},
		{"bad type", "POST", base, fmt.Sprintf(`{"metadata":{"name":"bad"},"type":7,"stringData":{"password":%q}}`, secret), false},
		{"exists", "POST", base, fmt.Sprintf(`{"metadata":{"name":"db"},"stringData":{"password":%q}}`, secret), false},
	} {
		resp, body := e.do(t, tc.method, tc.path, tc.body, "Content-Type", "application/json")
		if ok := resp.StatusCode < 300; ok != tc.ok {
			t.Fatalf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
	}
	aud.Close() // the audit log is written in the background: Close flushes it
	// The controls: both logs saw the requests.
	if !strings.Contains(audit.String(), `"resource":"secrets"`) || !strings.Contains(logs.String(), "refused") {
		t.Fatalf("the logs do not show the requests: the test proves nothing\naudit:\n%s\nlog:\n%s", audit.String(), logs.String())
	}
	for _, sink := range []struct {
		name string
		text func() string
	}{{"server log", logs.String}, {"audit log", audit.String}} {
		text := sink.text()
		if strings.Contains(text, secret) || strings.Contains(text, b64) {
			t.Errorf("the %s holds the Secret's value:\n%s", sink.name, text)
		}
	}
}
