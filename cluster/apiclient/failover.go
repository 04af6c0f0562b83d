package apiclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// parseServer checks that s is an http(s) base URL and drops its trailing
// slashes.
func parseServer(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("apiclient: server %q is not an http(s) URL", s)
	}
	return u, nil
}

// Server returns the base URL requests go to first: Config.Server until it
// could not be reached, then the last server that answered instead.
func (c *Client) Server() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current.String()
}

// SetServers replaces the servers tried when the current one cannot be
// reached (Config.Servers); Config.Server stays the first of all. URLs
// that repeat one already listed are dropped. If the current server is
// not among them any more, Config.Server becomes current again. An invalid
// URL is an error, and then nothing changes. It is safe to call while
// requests are in flight: they finish on the servers they were given.
func (c *Client) SetServers(urls []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := []*url.URL{c.servers[0]}
	seen := map[string]bool{list[0].String(): true}
	for _, s := range urls {
		u, err := parseServer(s)
		if err != nil {
			return err
		}
		if !seen[u.String()] {
			seen[u.String()] = true
			list = append(list, u)
		}
	}
	c.servers = list
	c.current = c.find(c.current)
	return nil
}

// find returns the listed server that is u, else Config.Server. c.mu is
// held.
func (c *Client) find(u *url.URL) *url.URL {
	for _, s := range c.servers {
		if s.String() == u.String() {
			return s
		}
	}
	return c.servers[0]
}

// order is the servers in the order a request tries them: the current
// one, then the others as listed.
func (c *Client) order() []*url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*url.URL, 0, len(c.servers))
	out = append(out, c.current)
	for _, u := range c.servers {
		if u != c.current {
			out = append(out, u)
		}
	}
	return out
}

// answered makes base, which answered after the current server could not
// be reached, the current one; unless SetServers dropped it meanwhile.
func (c *Client) answered(base *url.URL) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u := c.find(base); u.String() == base.String() {
		c.current = u
	}
}

// retryable tells whether a request that failed with the transport error
// err may be sent to another server. When the connection could not be
// made (a dial error: refused, no route, timed out), nothing was sent and
// any request may go elsewhere. Any other failure (reset, EOF, a TLS
// failure) may have come after the server received the request: only a
// GET or HEAD, which change nothing, are sent again.
func retryable(method string, err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return method == http.MethodGet || method == http.MethodHead
}

// IsNoLeader tells whether err is, or holds, an answer of a server that
// knows no leader of the store (503, cause apiserver.CauseNoLeader): that
// server did nothing, and a request that got it on every server it tried
// may be sent again later. Such an answer sends a request on to the next
// server, whatever its method.
func IsNoLeader(err error) bool {
	var st *StatusError
	if !errors.As(err, &st) || st.Status.Code != http.StatusServiceUnavailable || st.Status.Details == nil {
		return false
	}
	for _, c := range st.Status.Details.Causes {
		if c.Type == apiserver.CauseNoLeader {
			return true
		}
	}
	return false
}

// joinErrors is errs[0] alone, or all of errs (one per server tried) on
// one line; errors.Is and errors.As see each.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return serverErrors(errs)
}

// serverErrors is the failures of one request on each server it was sent to.
type serverErrors []error

func (e serverErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e serverErrors) Unwrap() []error { return e }
