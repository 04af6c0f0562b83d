package apiserver

import (
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
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/flotilla-dev/flotilla/cluster/admission"
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
	fieldSel := q.Get("fieldSelector")
	if req.eventsV1 {
		if fieldSel, err = v1FieldSelector(fieldSel); err != nil {
			return opts, nil, err
		}
	}
	opts.FieldSelector, here, err = splitFields(req.kind, fieldSel)
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

// writeObjects answers a get (one object) or a list, as JSON, protobuf
// (when the client prefers it and the kind has it) or as a Table when the
// client asked for one.
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
	mt, err := answerType(r, req.kind)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	if mt == protobufType {
		var data []byte
		if isList {
			data, err = protobufList(req.kind, objs, rev)
		} else {
			data, err = encodeProtobuf(req.kind, objs[0])
		}
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		writeProtobuf(w, code, data)
		return
	}
	if !isList {
		data, err := req.encode(objs[0])
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		writeRaw(w, code, data)
		return
	}
	list := objectList{
		TypeMeta: metav1.TypeMeta{APIVersion: req.apiVersion(), Kind: req.kind.Kind + "List"},
		Metadata: metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)},
		Items:    make([]json.RawMessage, 0, len(objs)),
	}
	for _, o := range objs {
		data, err := req.encode(o)
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

// watch streams events as JSON lines (or length-delimited protobuf
// WatchEvents when the client prefers them). Without resourceVersion (or with "0")
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
	tv := tableVersion(r)
	isProtobuf := false
	if tv == "" {
		mt, err := answerType(r, req.kind)
		if err != nil {
			s.writeError(w, r, err, req.target())
			return
		}
		isProtobuf = mt == protobufType
	}
	events, err := s.cfg.Store.Watch(ctx, req.kind.Resource, opts, since)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	switch {
	case tv != "":
		w.Header().Set("Content-Type", tableContentType(tv))
	case isProtobuf:
		w.Header().Set("Content-Type", protobufWatchType)
	default:
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	s.auditStarted(r)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	frames := protobuf.LengthDelimitedFramer.NewFrameWriter(w)
	first := true
	send := func(typ string, obj schema.Object) bool {
		var data []byte
		var err error
		if isProtobuf {
			if data, err = protobufEvent(req.kind, typ, obj); err != nil {
				s.log.Error("encode watch event", "err", err)
				return false
			}
			if _, err := frames.Write(data); err != nil {
				return false
			}
			if flusher != nil {
				flusher.Flush()
			}
			return true
		}
		if tv != "" {
			t := toTable(req.kind, []schema.Object{obj}, includeObject(r), first, time.Now())
			t.APIVersion = "meta.k8s.io/" + tv
			data, err = json.Marshal(t)
		} else {
			data, err = req.encode(obj)
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

// readObject reads a request body into an object of req's kind (the
// pipeline's strict decode), and checks that what it names agrees with
// the path. Unknown fields are refused unless the request's
// fieldValidation says Warn (they come back as Warning headers) or Ignore.
func (s *Server) readObject(w http.ResponseWriter, r *http.Request, req request) (schema.Object, error) {
	isProtobuf := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err == nil && mt == protobufType:
			isProtobuf = true
		case err != nil || mt != "application/json":
			return nil, newError(http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
				"the body of the request was in an unknown format %q; accepted: application/json, %s", ct, protobufType)
		}
	}
	mode, err := fieldValidation(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, err
	}
	if isProtobuf {
		if body, err = protobufToJSON(req, body); err != nil {
			return nil, err
		}
	}
	obj, warnings, err := decodeBody(req, body, mode)
	warn(w, warnings)
	return obj, err
}

// fieldValidation reads the fieldValidation parameter ("" is Strict).
func fieldValidation(r *http.Request) (admission.FieldValidation, error) {
	v := r.URL.Query().Get("fieldValidation")
	mode, ok := admission.ParseFieldValidation(v)
	if !ok {
		return "", badRequest("fieldValidation %q is not supported: use Strict, Warn or Ignore", v)
	}
	return mode, nil
}

// writeOptions reads the options of a write: dryRun=All, or none.
func writeOptions(r *http.Request) (admission.Options, error) {
	switch v := r.URL.Query()["dryRun"]; {
	case len(v) == 0:
		return admission.Options{}, nil
	case len(v) == 1 && v[0] == metav1.DryRunAll:
		return admission.Options{DryRun: true}, nil
	default:
		return admission.Options{}, badRequest("dryRun %q is not supported: the only value is %s", strings.Join(v, ","), metav1.DryRunAll)
	}
}

// warn adds Kubernetes Warning headers (kubectl prints them).
func warn(w http.ResponseWriter, warnings []string) {
	for _, m := range warnings {
		w.Header().Add("Warning", `299 - "`+strings.ReplaceAll(m, `"`, `'`)+`"`)
	}
}

// decodeBody is the pure part of readObject.
func decodeBody(req request, body []byte, mode admission.FieldValidation) (schema.Object, []string, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(body, &tm); err != nil {
		return nil, nil, badRequest("the request body is not valid JSON: %v", err)
	}
	if tm.APIVersion != "" && tm.APIVersion != req.kind.APIVersion() {
		return nil, nil, badRequest("the API version in the data (%s) does not match the expected API version (%s)", tm.APIVersion, req.kind.APIVersion())
	}
	if tm.Kind != "" && tm.Kind != req.kind.Kind {
		return nil, nil, badRequest("the kind in the data (%s) does not match the expected kind (%s)", tm.Kind, req.kind.Kind)
	}
	obj, warnings, err := admission.Decode(req.kind, body, mode)
	if err != nil {
		return nil, nil, err
	}
	if req.kind.Namespaced && req.nsPath {
		switch ns := obj.GetNamespace(); {
		case ns == "":
			obj.SetNamespace(req.namespace)
		case ns != req.namespace:
			return nil, nil, badRequest("the namespace of the provided object (%s) does not match the namespace sent on the request (%s)", ns, req.namespace)
		}
	}
	if !req.kind.Namespaced && obj.GetNamespace() != "" {
		return nil, nil, badRequest("%s is cluster-scoped; the object must not have a namespace (got %q)", req.kind.Kind, obj.GetNamespace())
	}
	if req.name != "" {
		switch name := obj.GetName(); {
		case name == "":
			obj.SetName(req.name)
		case name != req.name:
			return nil, nil, badRequest("the name of the object (%s) does not match the name on the URL (%s)", name, req.name)
		}
	}
	return obj, warnings, nil
}

// create stores a new object through the write pipeline.
func (s *Server) create(w http.ResponseWriter, r *http.Request, req request) {
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	obj, err := s.readObject(w, r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	req.name = obj.GetName()
	opts.Warn = func(m string) { warn(w, []string{m}) }
	created, err := s.writes.CreateWith(r.Context(), obj, opts)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusCreated, []schema.Object{created}, 0, false)
}

// update is PUT of an object (Update) or of its /status (UpdateStatus),
// through the write pipeline: an object from Git is refused there, inside
// the store transaction, so Git cannot claim it in between.
func (s *Server) update(w http.ResponseWriter, r *http.Request, req request, status bool) {
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	obj, err := s.readObject(w, r, req)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	opts.Warn = func(m string) { warn(w, []string{m}) }
	updated, err := s.writes.UpdateWith(r.Context(), obj, status, opts)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusOK, []schema.Object{updated}, 0, false)
}

// delete removes an object through the write pipeline; the body may
// carry DeleteOptions with preconditions.
func (s *Server) delete(w http.ResponseWriter, r *http.Request, req request) {
	wo, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
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
		if len(do.DryRun) > 0 {
			if len(do.DryRun) != 1 || do.DryRun[0] != metav1.DryRunAll {
				s.writeError(w, r, badRequest("dryRun %q is not supported: the only value is %s", strings.Join(do.DryRun, ","), metav1.DryRunAll), req.target())
				return
			}
			wo.DryRun = true
		}
	}
	gone, err := s.writes.DeleteWith(r.Context(), req.kind.Resource, req.namespace, req.name, opts, wo)
	if err != nil {
		s.writeError(w, r, err, req.target())
		return
	}
	s.writeObjects(w, r, req, http.StatusOK, []schema.Object{gone}, 0, false)
}
