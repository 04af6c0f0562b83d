package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

func (s *Server) get(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := s.cfg.Store.Get(r.Context(), req.kind.Resource, req.namespace, req.name)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusOK, []schema.Object{obj}, 0, false)
}

// listOptions reads and checks the selectors of a list or watch; the
// returned field selector is what the server filters by itself (nil: none).
func listOptions(r *http.Request, req request) (store.ListOptions, fields.Selector, error) {
	q := r.URL.Query()
	opts := store.ListOptions{Namespace: req.namespace, LabelSelector: q.Get("labelSelector")}
	if _, err := labels.Parse(opts.LabelSelector); err != nil {
		return opts, nil, badRequest("unable to parse requirement: %v", err)
	}
	var here fields.Selector
	var err error
	opts.FieldSelector, here, err = splitFields(req.kind, q.Get("fieldSelector"))
	if req.name != "" { // a watch of one object
		byName := fields.OneTermEqualSelector("metadata.name", req.name).String()
		if opts.FieldSelector == "" {
			opts.FieldSelector = byName
		} else {
			opts.FieldSelector += "," + byName
		}
	}
	return opts, here, err
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, req request) {
	opts, here, err := listOptions(r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	items, rev, err := s.cfg.Store.List(r.Context(), req.kind.Resource, opts)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	if here != nil {
		items = slices.DeleteFunc(items, func(o schema.Object) bool { return !keep(here, o) })
	}
	s.writeObjects(w, r, req, http.StatusOK, items, rev, true)
}

// objectList is the wire form of a <Kind>List.
type objectList struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ListMeta   `json:"metadata"`
	Items           []json.RawMessage `json:"items"`
}

// writeObjects answers a get (one object) or a list, as JSON or as a Table
// when the client asked for one.
func (s *Server) writeObjects(w http.ResponseWriter, r *http.Request, req request, code int, objs []schema.Object, rev int64, isList bool) {
	if tv := tableVersion(r); tv != "" {
		t := toTable(req.kind, objs, includeObject(r), true, time.Now())
		t.APIVersion = "meta.k8s.io/" + tv
		if isList {
			t.ResourceVersion = strconv.FormatInt(rev, 10)
		}
		writeTable(w, code, tv, t)
		return
	}
	if !isList {
		data, err := schema.Encode(objs[0])
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		writeRaw(w, code, data)
		return
	}
	list := objectList{
		TypeMeta: metav1.TypeMeta{APIVersion: req.kind.APIVersion(), Kind: req.kind.Kind + "List"},
		Metadata: metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
		Items:    make([]json.RawMessage, 0, len(objs)),
	}
	for _, o := range objs {
		data, err := schema.Encode(o)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		list.Items = append(list.Items, data)
	}
	writeJSON(w, code, list)
}

func writeRaw(w http.ResponseWriter, code int, data []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n"))
}

// watchEvent is one line of a watch stream.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watch streams events as JSON lines. Without resourceVersion (or with "0")
// it first sends ADDED for every current object; with one, it resumes after
// it, or answers 410 Gone when that revision is compacted. The stream ends
// with timeoutSeconds, when the client goes, when the server shuts down, or
// when the store drops a watcher that fell behind (the client then lists
// and watches again).
func (s *Server) watch(w http.ResponseWriter, r *http.Request, req request) {
	opts, here, err := listOptions(r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	q := r.URL.Query()
	var since int64
	// sendInitialEvents (client-go's WatchList) asks for the current state
	// first whatever the resourceVersion, then a bookmark marking its end.
	watchList := isTrue(q.Get("sendInitialEvents"))
	initial := watchList || q.Get("resourceVersion") == "" || q.Get("resourceVersion") == "0"
	if !initial {
		since, err = strconv.ParseInt(q.Get("resourceVersion"), 10, 64)
		if err != nil || since < 0 {
			s.writeError(w, r, badRequest("invalid resourceVersion %q", q.Get("resourceVersion")), req.target())
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if ts := q.Get("timeoutSeconds"); ts != "" {
		secs, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || secs < 0 {
			s.writeError(w, r, badRequest("invalid timeoutSeconds %q", ts), req.target())
			return
		}
		if secs > 0 {
			ctx, cancel = context.WithTimeout(ctx, time.Duration(min(secs, 1<<20))*time.Second)
			defer cancel()
		}
	}
	var current []schema.Object
	if initial {
		if current, since, err = s.cfg.Store.List(ctx, req.kind.Resource, opts); err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
	}
	events, err := s.cfg.Store.Watch(ctx, req.kind.Resource, opts, since)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	tv := tableVersion(r)
	if tv != "" {
		w.Header().Set("Content-Type", tableContentType(tv))
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	first := true
	send := func(typ string, obj schema.Object) bool {
		var data []byte
		var err error
		if tv != "" {
			t := toTable(req.kind, []schema.Object{obj}, includeObject(r), first, time.Now())
			t.APIVersion = "meta.k8s.io/" + tv
			data, err = json.Marshal(t)
		} else {
			data, err = schema.Encode(obj)
		}
		first = false
		if err != nil {
			s.log.Error("encode watch event", "err", err)
			return false
		}
		if enc.Encode(watchEvent{Type: typ, Object: data}) != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for _, obj := range current {
		if !keep(here, obj) {
			continue
		}
		if !send(string(store.Added), obj) {
			return
		}
	}
	if watchList && tv == "" {
		mark := req.kind.New()
		mark.SetResourceVersion(strconv.FormatInt(since, 10))
		mark.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		if !send("BOOKMARK", mark) {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if keep(here, ev.Object) && !send(string(ev.Type), ev.Object) {
				return
			}
		}
	}
}

// readObject reads a request body into an object of req's kind, and checks
// that what it names agrees with the path.
func (s *Server) readObject(w http.ResponseWriter, r *http.Request, req request) (schema.Object, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
				"the body of the request was in an unknown format %q; accepted: application/json", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, err
	}
	return decodeBody(req, body, r.URL.Query().Get("fieldValidation") == "Strict")
}

// decodeBody is the pure part of readObject. strict refuses unknown fields
// (fieldValidation=Strict, what kubectl sends).
func decodeBody(req request, body []byte, strict bool) (schema.Object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(body, &tm); err != nil {
		return nil, badRequest("the request body is not valid JSON: %v", err)
	}
	if tm.APIVersion != "" && tm.APIVersion != req.kind.APIVersion() {
		return nil, badRequest("the API version in the data (%s) does not match the expected API version (%s)", tm.APIVersion, req.kind.APIVersion())
	}
	if tm.Kind != "" && tm.Kind != req.kind.Kind {
		return nil, badRequest("the kind in the data (%s) does not match the expected kind (%s)", tm.Kind, req.kind.Kind)
	}
	obj, err := schema.Decode(req.kind, body)
	if err != nil {
		return nil, badRequest("the request body is not a valid %s: %v", req.kind.Kind, err)
	}
	if strict {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(req.kind.New()); err != nil {
			return nil, badRequest("strict decoding error: %v", err)
		}
	}
	if req.kind.Namespaced && req.nsPath {
		switch ns := obj.GetNamespace(); {
		case ns == "":
			obj.SetNamespace(req.namespace)
		case ns != req.namespace:
			return nil, badRequest("the namespace of the provided object (%s) does not match the namespace sent on the request (%s)", ns, req.namespace)
		}
	}
	if !req.kind.Namespaced && obj.GetNamespace() != "" {
		return nil, badRequest("%s is cluster-scoped; the object must not have a namespace (got %q)", req.kind.Kind, obj.GetNamespace())
	}
	if req.name != "" {
		switch name := obj.GetName(); {
		case name == "":
			obj.SetName(req.name)
		case name != req.name:
			return nil, badRequest("the name of the object (%s) does not match the name on the URL (%s)", name, req.name)
		}
	}
	return obj, nil
}

// gitOwned says whether Git is the source of truth of obj.
func gitOwned(obj schema.Object) bool {
	return obj.GetAnnotations()[schema.AnnotationManagedBy] == schema.ManagedByGit
}

// refuseGit is the 403 for a write to an object that Git owns.
func refuseGit(k schema.Kind, obj schema.Object) *apiError {
	where := ""
	if src := obj.GetAnnotations()[schema.AnnotationSource]; src != "" {
		if i := strings.LastIndexByte(src, ':'); i > 0 {
			if _, err := strconv.Atoi(src[i+1:]); err == nil {
				src = src[:i]
			}
		}
		where = " (" + src + ")"
	}
	return newError(http.StatusForbidden, metav1.StatusReasonForbidden,
		"%s %q is managed by Git%s; change it in the repository and commit", k.Resource, obj.GetName(), where)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, req request) {
	obj, err := s.readObject(w, r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	req.name = obj.GetName()
	if gitOwned(obj) {
		s.writeError(w, r, refuseGit(req.kind, obj), req.target())
		return
	}
	created, err := s.cfg.Store.Create(r.Context(), obj)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusCreated, []schema.Object{created}, 0, false)
}

// update is PUT of an object (Update) or of its /status (UpdateStatus). For
// a spec update the stored object is read first to refuse Git's objects;
// when the request carries no resourceVersion the one just read becomes a
// precondition, so an object that Git claims in between is not overwritten
// (the client then gets 409 Conflict and retries).
func (s *Server) update(w http.ResponseWriter, r *http.Request, req request, status bool) {
	obj, err := s.readObject(w, r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	ctx := r.Context()
	var updated schema.Object
	if status {
		updated, err = s.cfg.Store.UpdateStatus(ctx, obj)
	} else {
		if gitOwned(obj) {
			s.writeError(w, r, refuseGit(req.kind, obj), req.target())
			return
		}
		var cur schema.Object
		if cur, err = s.cfg.Store.Get(ctx, req.kind.Resource, req.namespace, req.name); err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		if gitOwned(cur) {
			s.writeError(w, r, refuseGit(req.kind, cur), req.target())
			return
		}
		if obj.GetResourceVersion() == "" {
			obj.SetResourceVersion(cur.GetResourceVersion())
		}
		updated, err = s.cfg.Store.Update(ctx, obj)
	}
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusOK, []schema.Object{updated}, 0, false)
}

// delete removes an object; the body may carry DeleteOptions with
// preconditions. Like update, it reads first to refuse Git's objects and
// makes the read resourceVersion a precondition when none is given.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, req request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	var opts store.DeleteOptions
	if len(strings.TrimSpace(string(body))) > 0 {
		var do metav1.DeleteOptions
		if err := json.Unmarshal(body, &do); err != nil {
			s.writeError(w, r, badRequest("the request body is not valid DeleteOptions: %v", err), req.target())
			return
		}
		if p := do.Preconditions; p != nil {
			if p.UID != nil {
				opts.UID = string(*p.UID)
			}
			if p.ResourceVersion != nil {
				opts.ResourceVersion = *p.ResourceVersion
			}
		}
	}
	ctx := r.Context()
	cur, err := s.cfg.Store.Get(ctx, req.kind.Resource, req.namespace, req.name)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	if gitOwned(cur) {
		s.writeError(w, r, refuseGit(req.kind, cur), req.target())
		return
	}
	if opts.ResourceVersion == "" {
		opts.ResourceVersion = cur.GetResourceVersion()
	}
	gone, err := s.cfg.Store.Delete(ctx, req.kind.Resource, req.namespace, req.name, opts)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusOK, []schema.Object{gone}, 0, false)
}
