package gitsync

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testSecret = "hook-secret"

func hexMAC(body, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func webhookSyncer(t testing.TB, secret, branch string) *Syncer {
	t.Helper()
	log := slog.New(slog.DiscardHandler) // a fuzz target may not log to f
	if tt, ok := t.(*testing.T); ok {
		log = testLogger(tt)
	}
	s, err := New(Config{URL: "/nonexistent", Branch: branch, WebhookSecret: secret, WorkDir: t.TempDir(),
		Store: nopStore{}, Loader: yamlLoader{}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func triggered(s *Syncer) bool {
	select {
	case <-s.trigger:
		return true
	default:
		return false
	}
}

func TestWebhook(t *testing.T) {
	push := `{"ref":"refs/heads/main","after":"abc"}`
	other := `{"ref":"refs/heads/feature"}`
	tag := `{"ref":"refs/tags/v1"}`
	cases := []struct {
		name    string
		method  string
		secret  string
		body    string
		headers map[string]string
		code    int
		trigger bool
	}{
		{"github push", "POST", testSecret, push, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexMAC(push, testSecret)}, 202, true},
		{"github ping", "POST", testSecret, `{"zen":"hi"}`, map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + hexMAC(`{"zen":"hi"}`, testSecret)}, 200, false},
		{"github bad signature", "POST", testSecret, push, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexMAC(push, "wrong")}, 401, false},
		{"github signature without prefix", "POST", testSecret, push, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": hexMAC(push, testSecret)}, 401, false},
		{"github other branch", "POST", testSecret, other, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexMAC(other, testSecret)}, 200, false},
		{"github tag", "POST", testSecret, tag, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexMAC(tag, testSecret)}, 200, false},
		{"github other event", "POST", testSecret, push, map[string]string{"X-GitHub-Event": "issues", "X-Hub-Signature-256": "sha256=" + hexMAC(push, testSecret)}, 200, false},
		{"github malformed", "POST", testSecret, "{not json", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hexMAC("{not json", testSecret)}, 400, false},
		{"gitea push", "POST", testSecret, push, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": hexMAC(push, testSecret)}, 202, true},
		{"gitea bad signature", "POST", testSecret, push, map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": hexMAC(push+" ", testSecret)}, 401, false},
		{"gitlab push", "POST", testSecret, push, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": testSecret}, 202, true},
		{"gitlab bad token", "POST", testSecret, push, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "nope"}, 401, false},
		{"gitlab other branch", "POST", testSecret, other, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": testSecret}, 200, false},
		{"unsigned", "POST", testSecret, push, map[string]string{"X-GitHub-Event": "push"}, 401, false},
		{"no secret configured", "POST", "", push, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": ""}, 403, false},
		{"GET", "GET", testSecret, "", nil, 405, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := webhookSyncer(t, tc.secret, "main")
			req := httptest.NewRequest(tc.method, "/hooks/git", strings.NewReader(tc.body))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			s.WebhookHandler().ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Errorf("code = %d, want %d (%s)", rec.Code, tc.code, rec.Body)
			}
			if got := triggered(s); got != tc.trigger {
				t.Errorf("triggered = %v, want %v", got, tc.trigger)
			}
		})
	}
}

func TestWebhookBodyLimit(t *testing.T) {
	s := webhookSyncer(t, testSecret, "main")
	big := bytes.Repeat([]byte("a"), MaxWebhookBody+1)
	req := httptest.NewRequest("POST", "/hooks/git", bytes.NewReader(big))
	req.Header.Set("X-Gitlab-Token", testSecret)
	rec := httptest.NewRecorder()
	s.WebhookHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("code = %d", rec.Code)
	}
}

func TestWebhookDefaultBranchBeforeFirstFetch(t *testing.T) {
	s := webhookSyncer(t, testSecret, "") // remote HEAD not resolved yet: any branch triggers
	body := `{"ref":"refs/heads/anything"}`
	req := httptest.NewRequest("POST", "/hooks/git", strings.NewReader(body))
	req.Header.Set("X-Gitlab-Token", testSecret)
	req.Header.Set("X-Gitlab-Event", "Push Hook")
	rec := httptest.NewRecorder()
	s.WebhookHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || !triggered(s) {
		t.Errorf("code = %d", rec.Code)
	}
}

func FuzzWebhook(f *testing.F) {
	push := `{"ref":"refs/heads/main"}`
	f.Add(push, "push", "sha256="+hexMAC(push, testSecret), "", "")
	f.Add(push, "push", "", hexMAC(push, testSecret), "")
	f.Add(push, "Push Hook", "", "", testSecret)
	f.Add(`{"ref":1}`, "push", "sha256=zz", "", "")
	f.Add("", "ping", "", "", testSecret)
	s := webhookSyncer(f, testSecret, "main")
	h := s.WebhookHandler()
	f.Fuzz(func(t *testing.T, body, event, hubSig, giteaSig, token string) {
		req := httptest.NewRequest("POST", "/hooks/git", strings.NewReader(body))
		set := func(k, v string) {
			if v != "" && !strings.ContainsAny(v, "\r\n\x00") {
				req.Header.Set(k, v)
			}
		}
		set("X-GitHub-Event", event)
		set("X-Gitlab-Event", event)
		set("X-Hub-Signature-256", hubSig)
		set("X-Gitea-Signature", giteaSig)
		set("X-Gitlab-Token", token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 202, 400, 401:
		default:
			t.Fatalf("unexpected code %d", rec.Code)
		}
		// Hex is read in either case (the same MAC), so the check
		// compares lower case.
		if rec.Code == 202 && token != testSecret && !strings.Contains(strings.ToLower(hubSig+giteaSig), hexMAC(body, testSecret)) {
			t.Fatalf("accepted without a valid signature")
		}
		triggered(s)
	})
}
