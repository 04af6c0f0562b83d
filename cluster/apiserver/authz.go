package apiserver

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authenticationv1alpha1 "k8s.io/api/authentication/v1alpha1"
	authenticationv1beta1 "k8s.io/api/authentication/v1beta1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"github.com/flotilla-dev/flotilla/cluster/auth"
)

// openPaths answer without credentials (health and version, as
// Kubernetes' system:public-info-viewer).
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/livez": true, "/version": true}

// devUser is who every request is when the server has no authentication
// at all (tests): a member of system:masters.
var devUser = auth.NewUser("system:admin", auth.GroupMasters)

// authenticate finds who is asking: a client certificate the cluster CA
// signed (verified by the TLS handshake), else the bearer token. The open
// endpoints need neither; anything else without a credential is 401.
func (s *Server) authenticate(next http.Handler) http.Handler {
	want := []byte(s.cfg.Token)
	noAuth := len(want) == 0 && len(s.cfg.ClientCA) == 0 && s.cfg.Tokens == nil
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		if _, open := s.cfg.Open[r.URL.Path]; open {
			next.ServeHTTP(w, r)
			return
		}
		var u *auth.User
		switch {
		case r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0:
			u = auth.UserFromCert(r.TLS.VerifiedChains[0][0])
		case !noAuth && strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
			got := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			switch {
			case len(want) > 0 && subtle.ConstantTimeCompare([]byte(got), want) == 1:
				u = s.cfg.TokenUser
			case s.cfg.Tokens != nil:
				var err error
				if u, err = s.cfg.Tokens.Authenticate(r.Context(), got); err != nil && !errors.Is(err, auth.ErrBadToken) {
					s.log.Warn("bearer token not checked", "err", err)
				}
			}
		case noAuth:
			u = devUser
		}
		if u == nil {
			s.writeError(w, r, newError(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized"), target{})
			return
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.user = u // for the audit log, which wraps this
		}
		next.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), u)))
	})
}

// authorize asks the authorizer about every authenticated request: each
// resource verb (watches, logs and the sync trigger included) and each
// non-resource path (discovery, OpenAPI).
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := auth.UserFrom(r.Context())
		if u == nil || s.cfg.Authorizer == nil {
			// The open endpoints carry no user; with no authorizer every
			// authenticated user may do anything.
			next.ServeHTTP(w, r)
			return
		}
		at := requestAttributes(r)
		if rec, ok := w.(*statusRecorder); ok {
			rec.at = &at // for the audit log, which wraps this
		}
		if ok, reason := s.cfg.Authorizer.Authorize(u, at); !ok {
			s.writeError(w, r, forbidden(u, at, reason), target{})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// forbidden is Kubernetes' 403 wording:
// pods "web" is forbidden: User "ann" cannot delete resource "pods" in API
// group "" in the namespace "shop".
func forbidden(u *auth.User, at auth.Attributes, reason string) error {
	if !at.ResourceRequest {
		msg := fmt.Sprintf("forbidden: User %q cannot %s path %q", u.Username, at.Verb, at.Path)
		if reason != "" {
			msg += ": " + reason
		}
		return newError(http.StatusForbidden, metav1.StatusReasonForbidden, "%s", msg)
	}
	res := at.Resource
	if at.Subresource != "" {
		res += "/" + at.Subresource
	}
	msg := fmt.Sprintf("User %q cannot %s resource %q in API group %q", u.Username, at.Verb, res, at.APIGroup)
	if at.Namespace != "" {
		msg += fmt.Sprintf(" in the namespace %q", at.Namespace)
	} else {
		msg += " at the cluster scope"
	}
	if reason != "" {
		msg += ": " + reason
	}
	return apierrors.NewForbidden(k8sschema.GroupResource{Group: at.APIGroup, Resource: at.Resource}, at.Name, errors.New(msg))
}

// requestAttributes describes r as Kubernetes' RequestInfoFactory does:
// /api/v1/… and /apis/GROUP/VERSION/… with a resource are resource requests
// (namespace, resource, name, subresource from the path, the verb from the
// method: list and watch for collections), anything else a non-resource
// request with the lower-case method as its verb.
func requestAttributes(r *http.Request) auth.Attributes {
	nonResource := auth.Attributes{Verb: strings.ToLower(r.Method), Path: r.URL.Path}
	if r.Method == http.MethodHead {
		nonResource.Verb = "get"
	}
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var at auth.Attributes
	var parts []string
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		parts = segs[2:]
	case len(segs) >= 4 && segs[0] == "apis":
		at.APIGroup, parts = segs[1], segs[3:]
	default:
		return nonResource
	}
	at.ResourceRequest = true
	if parts[0] == "namespaces" && len(parts) > 1 {
		at.Namespace = parts[1]
		if len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
			parts = parts[2:]
		}
	}
	at.Resource = parts[0]
	if len(parts) > 1 {
		at.Name = parts[1]
	}
	if len(parts) > 2 {
		at.Subresource = strings.Join(parts[2:], "/")
	}
	q := r.URL.Query()
	at.FieldSelector = q.Get("fieldSelector")
	watch := isTrue(q.Get("watch"))
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case watch:
			at.Verb = "watch"
		case at.Name == "":
			at.Verb = "list"
		default:
			at.Verb = "get"
		}
	case http.MethodPost:
		at.Verb = "create"
	case http.MethodPut:
		at.Verb = "update"
	case http.MethodPatch:
		at.Verb = "patch"
	case http.MethodDelete:
		at.Verb = "delete"
		if at.Name == "" {
			at.Verb = "deletecollection"
		}
	default:
		at.Verb = strings.ToLower(r.Method)
	}
	if at.Resource == "pods" && isStream(at.Resource, at.Subresource) {
		// exec, attach and port-forward need create whatever the method
		// (a WebSocket upgrade is a GET), as Kubernetes now requires.
		at.Verb = "create"
	}
	return at
}

// selfSubjectAccessReview answers `kubectl auth can-i`: may the asking
// user do what the review describes?
func (s *Server) selfSubjectAccessReview(w http.ResponseWriter, r *http.Request) {
	var review authorizationv1.SelfSubjectAccessReview
	if !s.readReview(w, r, &review) {
		return
	}
	var at auth.Attributes
	switch ra, nra := review.Spec.ResourceAttributes, review.Spec.NonResourceAttributes; {
	case ra != nil:
		at = auth.Attributes{ResourceRequest: true, Verb: ra.Verb, APIGroup: ra.Group, Resource: ra.Resource,
			Subresource: ra.Subresource, Namespace: ra.Namespace, Name: ra.Name}
	case nra != nil:
		at = auth.Attributes{Verb: nra.Verb, Path: nra.Path}
	default:
		s.writeError(w, r, newError(http.StatusUnprocessableEntity, metav1.StatusReasonInvalid,
			"SelfSubjectAccessReview is invalid: spec: exactly one of resourceAttributes or nonResourceAttributes is required"), target{})
		return
	}
	u := auth.UserFrom(r.Context())
	allowed, reason := true, ""
	if s.cfg.Authorizer != nil {
		allowed, reason = s.cfg.Authorizer.Authorize(u, at)
	}
	review.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: allowed, Denied: !allowed, Reason: reason}
	review.TypeMeta = metav1.TypeMeta{APIVersion: "authorization.k8s.io/v1", Kind: "SelfSubjectAccessReview"}
	writeJSON(w, http.StatusCreated, &review)
}

// selfSubjectReview answers `kubectl auth whoami`.
func (s *Server) selfSubjectReview(w http.ResponseWriter, r *http.Request) {
	var review authenticationv1.SelfSubjectReview
	if !s.readReview(w, r, &review) {
		return
	}
	// Answered in the version asked (kubectl 1.27 asks v1alpha1, then
	// v1beta1): the three have the same shape.
	version := "v1"
	if segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/"); len(segs) == 4 {
		version = segs[2]
	}
	review.TypeMeta = metav1.TypeMeta{APIVersion: "authentication.k8s.io/" + version, Kind: "SelfSubjectReview"}
	review.Status.UserInfo = *auth.UserFrom(r.Context())
	writeJSON(w, http.StatusCreated, &review)
}

// readReview decodes a review's POST body into v, answering the error
// itself when it cannot.
func (s *Server) readReview(w http.ResponseWriter, r *http.Request, v runtime.Object) bool {
	if r.Method != http.MethodPost {
		s.writeError(w, r, methodNotAllowed(r.Method, r.URL.Path), target{})
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		s.writeError(w, r, err, target{})
		return false
	}
	if _, _, err := reviewCodecs.UniversalDeserializer().Decode(body, nil, v); err != nil {
		s.writeError(w, r, badRequest("the review cannot be decoded: %v", err), target{})
		return false
	}
	return true
}

// reviewCodecs decode reviews in JSON or protobuf (the typed clients
// kubectl's auth verbs use send protobuf).
var reviewCodecs = func() serializer.CodecFactory {
	sc := runtime.NewScheme()
	utilruntime.Must(authorizationv1.AddToScheme(sc))
	utilruntime.Must(authenticationv1.AddToScheme(sc))
	utilruntime.Must(authenticationv1beta1.AddToScheme(sc))
	utilruntime.Must(authenticationv1alpha1.AddToScheme(sc))
	utilruntime.Must(certificatesv1.AddToScheme(sc))
	return serializer.NewCodecFactory(sc)
}()

// reviewRoutes are the review endpoints, by group, version and resource.
var reviewRoutes = map[[3]string]func(*Server, http.ResponseWriter, *http.Request){
	{"authorization.k8s.io", "v1", "selfsubjectaccessreviews"}:  (*Server).selfSubjectAccessReview,
	{"authentication.k8s.io", "v1", "selfsubjectreviews"}:       (*Server).selfSubjectReview,
	{"authentication.k8s.io", "v1beta1", "selfsubjectreviews"}:  (*Server).selfSubjectReview,
	{"authentication.k8s.io", "v1alpha1", "selfsubjectreviews"}: (*Server).selfSubjectReview,
	{"certificates.k8s.io", "v1", "certificatesigningrequests"}: (*Server).certificateSigningRequest,
}
