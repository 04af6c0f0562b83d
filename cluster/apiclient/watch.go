package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Watch implements store.Interface over the streaming endpoint
// (?watch=1&resourceVersion=N). sinceRevision 0 means "from now on", as
// for the store: the client first reads the server's current revision.
// ErrCompacted (410) is returned here when the revision is too old; an
// ERROR event in the stream (or any read error) closes the channel, after
// which the caller lists and watches again: through the current server,
// which is another one if the watch's server went away (see Client).
func (c *Client) Watch(ctx context.Context, resource string, opts store.ListOptions, sinceRevision int64) (<-chan store.Event, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	if sinceRevision <= 0 {
		if sinceRevision, err = c.revision(ctx); err != nil {
			return nil, err
		}
	}
	q := listQuery(opts)
	q.Set("watch", "1")
	q.Set("resourceVersion", strconv.FormatInt(sinceRevision, 10))
	resp, err := c.send(ctx, http.MethodGet, path(k, opts.Namespace, "", ""), q, nil)
	if err != nil {
		return nil, err
	}
	ch := make(chan store.Event, 16)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		stop := context.AfterFunc(ctx, func() { resp.Body.Close() })
		defer stop()
		dec := json.NewDecoder(resp.Body)
		for {
			var line struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			if err := dec.Decode(&line); err != nil {
				return
			}
			ev, ok := decodeEvent(k, line.Type, line.Object)
			if !ok {
				if line.Type == "BOOKMARK" {
					continue
				}
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// decodeEvent turns one watch line into a store event; ok is false for
// anything but ADDED, MODIFIED and DELETED with a decodable object.
func decodeEvent(k schema.Kind, typ string, raw json.RawMessage) (store.Event, bool) {
	switch store.EventType(typ) {
	case store.Added, store.Modified, store.Deleted:
	default:
		return store.Event{}, false
	}
	obj, err := schema.Decode(k, raw)
	if err != nil {
		return store.Event{}, false
	}
	rev, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
	return store.Event{Type: store.EventType(typ), Object: obj, Revision: rev}, true
}

// StatusError is an error answer of the server, with its Kubernetes Status.
// errors.Is matches it against the store's sentinel errors by code and
// reason (NotFound → store.ErrNotFound, AlreadyExists → store.ErrExists,
// Conflict → store.ErrConflict, Gone/Expired → store.ErrCompacted, Invalid
// → store.ErrInvalid); Error() is the server's message.
type StatusError struct {
	Status metav1.Status
}

func (e *StatusError) Error() string { return e.Status.Message }

// Is implements the errors.Is match described on StatusError.
func (e *StatusError) Is(target error) bool {
	st := e.Status
	switch target {
	case store.ErrNotFound:
		return st.Code == http.StatusNotFound
	case store.ErrExists:
		return st.Code == http.StatusConflict && st.Reason == metav1.StatusReasonAlreadyExists
	case store.ErrConflict:
		return st.Code == http.StatusConflict && st.Reason != metav1.StatusReasonAlreadyExists
	case store.ErrCompacted:
		return st.Code == http.StatusGone
	case store.ErrInvalid:
		return st.Code == http.StatusUnprocessableEntity
	case store.ErrClosed:
		return st.Code == http.StatusServiceUnavailable && st.Reason == metav1.StatusReasonServiceUnavailable &&
			st.Message == "the store is closed"
	}
	return false
}

// Code is the HTTP status code.
func (e *StatusError) Code() int { return int(e.Status.Code) }

// decodeError builds a StatusError from an error answer; a body that is not
// a Status still gives one, from the code and the text.
func decodeError(code int, body []byte) error {
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" {
		msg := string(body)
		if len(msg) > 300 {
			msg = msg[:300]
		}
		if msg == "" {
			msg = http.StatusText(code)
		}
		st = metav1.Status{Status: metav1.StatusFailure, Message: fmt.Sprintf("server answered %d: %s", code, msg),
			Reason: metav1.StatusReasonUnknown}
	}
	if st.Code == 0 {
		st.Code = int32(code)
	}
	return &StatusError{Status: st}
}
