package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sschema "k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flotilla-dev/flotilla/cluster/auth"
	"github.com/flotilla-dev/flotilla/cluster/store"
)

// Node certificates. A CertificateSigningRequest (certificates.k8s.io/v1)
// that a joining node posts with its bootstrap token, or a joined node with
// its certificate to renew it, is checked and signed in the same request —
// the rules of Kubernetes' csrapproving controller for kubelets, applied at
// once — and is not stored: the answer carries status.certificate.
//
// A node's first certificate binds its name to its key: the Node records
// the key's fingerprint (auth.AnnotationNodeKey), and a bootstrap token cannot
// get a certificate for a Node bound to another key. An operator frees the
// name by deleting the Node.

// DefaultNodeCertTTL is how long a node's certificates are valid unless the
// server is told otherwise (a year, as Kubernetes' cluster signing
// duration); agents renew them well before.
const DefaultNodeCertTTL = 365 * 24 * time.Hour

// maxCSRIPs bounds the addresses a serving certificate may name.
const maxCSRIPs = 16

var csrResource = k8sschema.GroupResource{Group: certificatesv1.GroupName, Resource: "certificatesigningrequests"}

// certificateSigningRequest answers POST …/certificatesigningrequests.
func (s *Server) certificateSigningRequest(w http.ResponseWriter, r *http.Request) {
	var csr certificatesv1.CertificateSigningRequest
	if !s.readReview(w, r, &csr) {
		return
	}
	if s.cfg.Signer == nil {
		s.writeError(w, r, newError(http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed,
			"this server does not sign certificates (it has no cluster CA)"), target{})
		return
	}
	u := auth.UserFrom(r.Context())
	if csr.Name == "" {
		csr.Name = csr.GenerateName + rand.String(5)
		if csr.GenerateName == "" {
			csr.Name = "csr-" + rand.String(5)
		}
	}
	cert, err := s.signNodeCSR(r.Context(), u, &csr)
	if err != nil {
		s.writeError(w, r, err, target{})
		return
	}
	s.log.Info("certificate issued", "user", u.Username, "signer", csr.Spec.SignerName, "csr", csr.Name)
	csr.TypeMeta = metav1.TypeMeta{APIVersion: "certificates.k8s.io/v1", Kind: "CertificateSigningRequest"}
	csr.Spec.Username, csr.Spec.Groups, csr.Spec.UID = u.Username, u.Groups, u.UID
	now := metav1.Now()
	csr.CreationTimestamp = now
	csr.Status = certificatesv1.CertificateSigningRequestStatus{
		Certificate: cert,
		Conditions: []certificatesv1.CertificateSigningRequestCondition{{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AutoApproved",
			Message: "a node's own certificate", LastUpdateTime: now, LastTransitionTime: now,
		}},
	}
	writeJSON(w, http.StatusCreated, &csr)
}

// signNodeCSR checks csr against who asks and signs it.
func (s *Server) signNodeCSR(ctx context.Context, u *auth.User, csr *certificatesv1.CertificateSigningRequest) ([]byte, error) {
	invalid := func(format string, args ...any) error {
		return newError(http.StatusUnprocessableEntity, metav1.StatusReasonInvalid,
			"CertificateSigningRequest %q is invalid: "+format, append([]any{csr.Name}, args...)...)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, invalid("spec.request: must be a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalid("spec.request: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, invalid("spec.request: the signature does not match its key: %v", err)
	}
	if err := acceptableKey(req.PublicKey); err != nil {
		return nil, invalid("spec.request: %v", err)
	}
	name, ok := strings.CutPrefix(req.Subject.CommonName, auth.NodeUserPrefix)
	if !ok || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return nil, invalid("spec.request: the subject's common name %q must be %sNAME with NAME a node name", req.Subject.CommonName, auth.NodeUserPrefix)
	}
	if !slices.Equal(req.Subject.Organization, []string{auth.GroupNodes}) || len(req.Subject.OrganizationalUnit) > 0 {
		return nil, invalid("spec.request: the subject's organization must be exactly %q", auth.GroupNodes)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, invalid("spec.request: a node certificate names no e-mail address or URI")
	}
	forbid := func(format string, args ...any) error {
		return apierrors.NewForbidden(csrResource, csr.Name,
			fmt.Errorf("User %q may not have a certificate for node %q: "+format, append([]any{u.Username, name}, args...)...))
	}
	ttl := s.cfg.NodeCertTTL
	if e := csr.Spec.ExpirationSeconds; e != nil && *e > 0 && time.Duration(*e)*time.Second < ttl {
		ttl = time.Duration(*e) * time.Second
	}
	asNode, isNode := auth.NodeName(u)
	fp := keyFingerprint(req.PublicKey)
	switch csr.Spec.SignerName {
	case certificatesv1.KubeAPIServerClientKubeletSignerName:
		if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 {
			return nil, invalid("spec.request: a client certificate names no host")
		}
		switch {
		case isNode && asNode == name:
			// A node renews its own certificate.
		case isNode:
			return nil, forbid("it is node %q", asNode)
		case slices.Contains(u.Groups, auth.GroupBootstrappers):
		default:
			return nil, forbid("only a joining node (with a bootstrap token) or the node itself may ask")
		}
		if err := s.bindNodeKey(ctx, name, fp, isNode); err != nil {
			if errors.Is(err, errNodeBound) {
				return nil, forbid("%v", err)
			}
			return nil, err
		}
		return s.cfg.Signer.Sign(Request{Subject: pkix.Name{CommonName: req.Subject.CommonName, Organization: []string{auth.GroupNodes}},
			PublicKey: req.PublicKey, TTL: ttl})
	case certificatesv1.KubeletServingSignerName:
		if !isNode || asNode != name {
			return nil, forbid("only the node itself, with its client certificate, may ask for its serving certificate")
		}
		if !slices.Equal(req.DNSNames, []string{name}) {
			return nil, invalid("spec.request: a serving certificate names exactly one DNS name, the node's (%q)", name)
		}
		if len(req.IPAddresses) > maxCSRIPs {
			return nil, invalid("spec.request: %d IP addresses, at most %d", len(req.IPAddresses), maxCSRIPs)
		}
		return s.cfg.Signer.Sign(Request{Subject: pkix.Name{CommonName: req.Subject.CommonName, Organization: []string{auth.GroupNodes}},
			PublicKey: req.PublicKey, Serving: true, DNSNames: req.DNSNames, IPs: req.IPAddresses, TTL: ttl})
	default:
		return nil, invalid("spec.signerName: %q is not signed here; want %q or %q", csr.Spec.SignerName,
			certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName)
	}
}

// errNodeBound: the Node exists and its certificates are another key's.
var errNodeBound = errors.New("node bound to another key")

// bindNodeKey makes sure Node name is bound to the key fp: a Node that does
// not exist yet is created bound to it; one without a binding is bound when
// its own node asks (renewing); one bound to another key refuses.
func (s *Server) bindNodeKey(ctx context.Context, name, fp string, isNode bool) error {
	for range 3 {
		obj, err := s.cfg.Store.Get(ctx, "nodes", "", name)
		if errors.Is(err, store.ErrNotFound) {
			n := &corev1.Node{
				TypeMeta:   metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{auth.AnnotationNodeKey: fp}},
			}
			if _, err = s.writes.Create(ctx, n); errors.Is(err, store.ErrExists) {
				continue // another request made it first: check its binding
			}
			return err
		}
		if err != nil {
			return err
		}
		n := obj.(*corev1.Node)
		switch have := n.Annotations[auth.AnnotationNodeKey]; {
		case have == fp:
			return nil
		case have == "" && isNode:
			n = n.DeepCopy()
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[auth.AnnotationNodeKey] = fp
			if _, err = s.writes.Update(ctx, n); errors.Is(err, store.ErrConflict) {
				continue
			}
			return err
		default:
			return fmt.Errorf("%w: node %q is already in the cluster, joined by another machine; "+
				"if that machine is gone, delete it (kubectl delete node %s) and join again, else pick another --node-name", errNodeBound, name, name)
		}
	}
	return newError(http.StatusConflict, metav1.StatusReasonConflict, "node %q changed while its certificate was signed; try again", name)
}

// keyFingerprint is the hex SHA-256 of a public key's PKIX encoding.
func keyFingerprint(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// acceptableKey refuses weak keys.
func acceptableKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return fmt.Errorf("an ECDSA key of %d bits; want P-256 or larger", k.Curve.Params().BitSize)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("an RSA key of %d bits; want 2048 or more", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("a key of type %T; want ECDSA, RSA or Ed25519", pub)
	}
	return nil
}
