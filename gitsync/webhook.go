package gitsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// MaxWebhookBody limits a webhook request body. Push payloads of large
// pushes run to a few hundred KiB.
const MaxWebhookBody = 5 << 20

// WebhookHandler serves `POST /hooks/git`: push notifications from GitHub,
// Gitea (and Forgejo, Gogs) and GitLab. A push to the synced branch
// triggers a sync and is answered 202 Accepted. Answers: 200 to pings and to
// pushes of other refs (ignored), 401 to a missing or bad signature or
// token, 400 to a malformed body, 403 when no secret is configured, 405 to
// anything but POST, 413 to an oversized body.
//
// Authentication: GitHub's X-Hub-Signature-256 ("sha256=" + hex HMAC-SHA256
// of the body with the secret), Gitea's X-Gitea-Signature (hex HMAC-SHA256),
// GitLab's X-Gitlab-Token (equal to the secret). The signature is checked
// before the body is parsed.
func (s *Syncer) WebhookHandler() http.Handler {
	return http.HandlerFunc(s.serveWebhook)
}

func (s *Syncer) serveWebhook(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if s.cfg.WebhookSecret == "" {
		http.Error(w, "webhook disabled: no webhook secret is configured", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	event, ok := authenticate(r.Header, body, []byte(s.cfg.WebhookSecret))
	if !ok {
		http.Error(w, "missing or invalid signature", http.StatusUnauthorized)
		return
	}
	switch strings.ToLower(event) {
	case "ping":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "pong\n")
		return
	case "push", "push hook":
	default:
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "event ignored\n")
		return
	}
	var p struct {
		Ref string `json:"ref"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Ref == "" {
		http.Error(w, "malformed push payload: no ref", http.StatusBadRequest)
		return
	}
	branch, isBranch := strings.CutPrefix(p.Ref, "refs/heads/")
	if want := s.Branch(); !isBranch || (want != "" && branch != want) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "push to another ref ignored\n")
		return
	}
	s.log.Info("webhook push; syncing", "ref", p.Ref)
	s.Trigger()
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, "sync triggered\n")
}

// authenticate checks the request's signature or token and returns the
// event name it announces.
func authenticate(h http.Header, body, secret []byte) (event string, ok bool) {
	event = firstHeader(h, "X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event", "X-Gitlab-Event")
	switch {
	case h.Get("X-Gitea-Signature") != "":
		return event, validHexMAC(h.Get("X-Gitea-Signature"), body, secret)
	case h.Get("X-Hub-Signature-256") != "":
		sig, found := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		return event, found && validHexMAC(sig, body, secret)
	case h.Get("X-Gitlab-Token") != "":
		return event, subtle.ConstantTimeCompare([]byte(h.Get("X-Gitlab-Token")), secret) == 1
	}
	return event, false
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

func validHexMAC(sigHex string, body, secret []byte) bool {
	sig, err := hex.DecodeString(strings.TrimSpace(sigHex))
	if err != nil || len(sig) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}
