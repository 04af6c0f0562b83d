// Package apiclient talks to a Flotilla API server, or to whichever of a
// cluster's servers answers: it implements store.Interface over the
// Kubernetes-shaped REST API (so that the CLI and remote node agents use the
// cluster state as if the store were local), streams watches and pod logs,
// and reads and writes the kubeconfig files that it and kubectl share.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/schema"
)

// Config says how to reach a server.
type Config struct {
	// Server is the base URL, "https://host:6443".
	Server string
	// Servers are more base URLs of the same cluster (its other servers,
	// with certificates of the same CA), tried in order when a request
	// cannot reach Server; see Client. Empty: Server alone. SetServers
	// replaces them later.
	Servers []string
	// CAData is the PEM of the CA that signed the server's certificate;
	// empty means the system roots.
	CAData []byte
	// Token is the bearer token; empty sends none.
	Token string
	// CertData and KeyData are a client certificate and its key in PEM
	// (kubeconfig's client-certificate-data and client-key-data).
	CertData, KeyData []byte
	// GetClientCertificate supplies the client certificate at each
	// handshake instead (a node's, renewed while the client lives).
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// InsecureSkipVerify disables server certificate checks (never in
	// production; kubeconfig's insecure-skip-tls-verify).
	InsecureSkipVerify bool
	// Transport replaces the HTTP transport (tests); CAData and
	// InsecureSkipVerify are then ignored.
	Transport http.RoundTripper
}

// Client is a remote store.Interface and more. It is safe for concurrent use.
//
// A client may know several servers of one cluster (Config.Servers,
// SetServers). Each request goes to the current server (at first
// Config.Server); when it cannot reach it, the same request is sent to the
// others in turn, and the first that answers becomes the current one, so
// that later requests, and watches opened again, go straight to it. Any
// request moves on when the connection could not be made (nothing was
// sent); when it was lost later (the server may have received the
// request), only a GET or HEAD does. An answer with an error status is an
// answer: it is returned, never retried elsewhere; except a server's "no
// leader" (IsNoLeader: it did nothing), after which any request moves on,
// and the last server's answer is returned.
type Client struct {
	token string
	hc    *http.Client

	mu      sync.Mutex
	servers []*url.URL // Config.Server first, then the fallbacks; no duplicates
	current *url.URL   // one of servers: where requests go first
}

// Interface guards.
var (
	_ store.Interface     = (*Client)(nil)
	_ apiserver.LogSource = (*Client)(nil)
)

// ErrTxnUnsupported is what Txn returns: transactions stay in-process.
var ErrTxnUnsupported = fmt.Errorf("apiclient: transactions are not supported over the API: %w", errors.ErrUnsupported)

// requestTimeout bounds calls without a deadline of their own (watches and
// log streams excepted).
const requestTimeout = 30 * time.Second

// dialTimeout bounds the connection to one server, so that a server whose
// host is down leaves time to try the next within requestTimeout.
const dialTimeout = 5 * time.Second

// New builds a client from cfg.
func New(cfg Config) (*Client, error) {
	u, err := parseServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	c := &Client{token: cfg.Token, servers: []*url.URL{u}, current: u}
	if err := c.SetServers(cfg.Servers); err != nil {
		return nil, err
	}
	rt := cfg.Transport
	if rt == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in
		if len(cfg.CAData) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(cfg.CAData) {
				return nil, errors.New("apiclient: CA data holds no PEM certificate")
			}
			tlsCfg.RootCAs = pool
		}
		if len(cfg.CertData) > 0 || len(cfg.KeyData) > 0 {
			pair, err := tls.X509KeyPair(cfg.CertData, cfg.KeyData)
			if err != nil {
				return nil, fmt.Errorf("apiclient: client certificate: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{pair}
		}
		tlsCfg.GetClientCertificate = cfg.GetClientCertificate
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
		t.TLSClientConfig = tlsCfg
		// Requests share one HTTP/2 connection: one whose peer vanished
		// (the API VIP moved on, a server cut off) would hold every
		// request until its deadline, forever. A ping after 10 s of
		// silence finds it dead within 5 s more (client-go does the same).
		t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second}
		rt = t
	}
	c.hc = &http.Client{Transport: rt}
	return c, nil
}

// path builds a resource path; ns is used for namespaced kinds only.
func path(k schema.Kind, ns, name, sub string) string {
	var b strings.Builder
	if k.Group == "" {
		b.WriteString("/api/" + k.Version)
	} else {
		b.WriteString("/apis/" + k.Group + "/" + k.Version)
	}
	if k.Namespaced && ns != "" {
		b.WriteString("/namespaces/" + url.PathEscape(ns))
	}
	b.WriteString("/" + k.Resource)
	if name != "" {
		b.WriteString("/" + url.PathEscape(name))
	}
	if sub != "" {
		b.WriteString("/" + sub)
	}
	return b.String()
}

func kindOf(resource string) (schema.Kind, error) {
	k, ok := schema.KindByResource(resource)
	if !ok {
		return k, fmt.Errorf("apiclient: unknown resource %q", resource)
	}
	return k, nil
}

// send performs one request and returns the response if its status is 2xx;
// otherwise it decodes the Status into an error. It tries the servers as
// Client says.
func (c *Client) send(ctx context.Context, method, p string, q url.Values, body []byte) (*http.Response, error) {
	var errs []error
	servers := c.order()
	for i, base := range servers {
		resp, err := c.sendTo(ctx, base, method, p, q, body)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil || !retryable(method, err) {
				break
			}
			continue
		}
		var answer error
		if resp.StatusCode/100 != 2 {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			answer = decodeError(resp.StatusCode, data)
			resp = nil
			if IsNoLeader(answer) {
				if i < len(servers)-1 && ctx.Err() == nil {
					// That server did nothing: another may know a leader.
					errs = append(errs, answer)
					continue
				}
				return nil, answer
			}
		}
		if i > 0 {
			c.answered(base)
		}
		return resp, answer
	}
	return nil, fmt.Errorf("apiclient: %s %s: %w", method, p, joinErrors(errs))
}

// sendTo sends one request to the server at base; the error is the
// transport's (no answer), an answer of any status is a response.
func (c *Client) sendTo(ctx context.Context, base *url.URL, method, p string, q url.Values, body []byte) (*http.Response, error) {
	u := *base
	u.Path = base.Path + p
	u.RawPath = base.EscapedPath() + p
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.hc.Do(req)
}

// call is send for short requests: it reads the whole answer.
func (c *Client) call(ctx context.Context, method, p string, q url.Values, body []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, p, q, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("apiclient: %s %s: %w", method, p, err)
	}
	return data, nil
}

func (c *Client) callObject(ctx context.Context, k schema.Kind, method, p string, body []byte) (schema.Object, error) {
	data, err := c.call(ctx, method, p, nil, body)
	if err != nil {
		return nil, err
	}
	obj, err := schema.Decode(k, data)
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	return obj, nil
}

// Get implements store.Interface.
func (c *Client) Get(ctx context.Context, resource, namespace, name string) (schema.Object, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	if name == "" || (k.Namespaced && namespace == "") {
		return nil, fmt.Errorf("%s %q in namespace %q: %w", resource, name, namespace, store.ErrNotFound)
	}
	return c.callObject(ctx, k, http.MethodGet, path(k, namespace, name, ""), nil)
}

func listQuery(opts store.ListOptions) url.Values {
	q := url.Values{}
	if opts.LabelSelector != "" {
		q.Set("labelSelector", opts.LabelSelector)
	}
	if opts.FieldSelector != "" {
		q.Set("fieldSelector", opts.FieldSelector)
	}
	return q
}

// List implements store.Interface.
func (c *Client) List(ctx context.Context, resource string, opts store.ListOptions) ([]schema.Object, int64, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, 0, err
	}
	data, err := c.call(ctx, http.MethodGet, path(k, opts.Namespace, "", ""), listQuery(opts), nil)
	if err != nil {
		return nil, 0, err
	}
	var list struct {
		Metadata metav1.ListMeta   `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, 0, fmt.Errorf("apiclient: decode %sList: %w", k.Kind, err)
	}
	rev, err := strconv.ParseInt(list.Metadata.ResourceVersion, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("apiclient: %sList has resourceVersion %q", k.Kind, list.Metadata.ResourceVersion)
	}
	objs := make([]schema.Object, 0, len(list.Items))
	for _, raw := range list.Items {
		obj, err := schema.Decode(k, raw)
		if err != nil {
			return nil, 0, fmt.Errorf("apiclient: %w", err)
		}
		objs = append(objs, obj)
	}
	return objs, rev, nil
}

// write sends obj with method to its own path (sub: "" or "status"), or to
// its collection for a create.
func (c *Client) write(ctx context.Context, method string, obj schema.Object, sub string) (schema.Object, error) {
	k, err := schema.KindOf(obj)
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	ns := obj.GetNamespace()
	if k.Namespaced && ns == "" {
		ns = metav1.NamespaceDefault
	}
	name := obj.GetName()
	if method == http.MethodPost {
		name = ""
	} else if name == "" {
		return nil, fmt.Errorf("apiclient: %s without a name: %w", k.Kind, store.ErrInvalid)
	}
	body, err := schema.Encode(schema.Copy(obj))
	if err != nil {
		return nil, fmt.Errorf("apiclient: %w", err)
	}
	return c.callObject(ctx, k, method, path(k, ns, name, sub), body)
}

// Create implements store.Interface.
func (c *Client) Create(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return c.write(ctx, http.MethodPost, obj, "")
}

// Update implements store.Interface. The server refuses (403) objects that
// Git owns.
func (c *Client) Update(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return c.write(ctx, http.MethodPut, obj, "")
}

// UpdateStatus implements store.Interface.
func (c *Client) UpdateStatus(ctx context.Context, obj schema.Object) (schema.Object, error) {
	return c.write(ctx, http.MethodPut, obj, "status")
}

// Delete implements store.Interface.
func (c *Client) Delete(ctx context.Context, resource, namespace, name string, opts store.DeleteOptions) (schema.Object, error) {
	k, err := kindOf(resource)
	if err != nil {
		return nil, err
	}
	if name == "" || (k.Namespaced && namespace == "") {
		return nil, fmt.Errorf("%s %q in namespace %q: %w", resource, name, namespace, store.ErrNotFound)
	}
	var body []byte
	if opts.UID != "" || opts.ResourceVersion != "" {
		do := metav1.DeleteOptions{
			TypeMeta:      metav1.TypeMeta{APIVersion: "v1", Kind: "DeleteOptions"},
			Preconditions: &metav1.Preconditions{},
		}
		if opts.UID != "" {
			uid := types.UID(opts.UID)
			do.Preconditions.UID = &uid
		}
		if opts.ResourceVersion != "" {
			do.Preconditions.ResourceVersion = &opts.ResourceVersion
		}
		if body, err = json.Marshal(do); err != nil {
			return nil, fmt.Errorf("apiclient: %w", err)
		}
	}
	return c.callObject(ctx, k, http.MethodDelete, path(k, namespace, name, ""), body)
}

// Txn implements store.Interface: it always fails with ErrTxnUnsupported.
func (c *Client) Txn(ctx context.Context, fn func(tx store.Tx) error) (int64, error) {
	return 0, ErrTxnUnsupported
}

// Revision implements store.Interface: the revision the server's store is
// at, read by listing the (single) SyncStatus; 0 if the server cannot be
// reached.
func (c *Client) Revision() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := c.revision(ctx)
	if err != nil {
		return 0
	}
	return rev
}

func (c *Client) revision(ctx context.Context) (int64, error) {
	_, rev, err := c.List(ctx, "syncstatuses", store.ListOptions{})
	return rev, err
}

// PodLogs implements apiserver.LogSource: it copies the pod's logs to w
// until they end (or, with Follow, until ctx ends).
func (c *Client) PodLogs(ctx context.Context, namespace, pod string, opts corev1.PodLogOptions, w io.Writer) error {
	k, _ := schema.KindByResource("pods")
	resp, err := c.send(ctx, http.MethodGet, path(k, namespace, pod, "log"), apiserver.LogQuery(opts), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("apiclient: logs of %s/%s: %w", namespace, pod, err)
	}
	return nil
}

// Sync asks the server to fetch its repository and apply the newest commit
// now, and returns the resulting sync status. It waits for the sync to end.
func (c *Client) Sync(ctx context.Context) (*schema.SyncStatus, error) {
	k, _ := schema.KindByResource("syncstatuses")
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Minute) // a first clone can be slow
		defer cancel()
	}
	obj, err := c.callObject(ctx, k, http.MethodPost, apiserver.SyncPath, nil)
	if err != nil {
		return nil, err
	}
	return obj.(*schema.SyncStatus), nil
}
