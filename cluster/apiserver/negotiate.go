package apiserver

import (
	"net/http"
	"strings"

	"github.com/munnerz/goautoneg"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// negotiate picks the media type of an answer: the first of the request's
// Accept clauses (in goautoneg's order: by quality, then as listed) that
// one of offers matches, wildcards included. No Accept header takes the
// first offer; "" means none is acceptable. Clauses with an "as"
// parameter (Tables) are for tableVersion, not for this.
func negotiate(r *http.Request, offers ...string) string {
	header := r.Header.Get("Accept")
	if strings.TrimSpace(header) == "" {
		return offers[0]
	}
	for _, c := range goautoneg.ParseAccept(header) {
		if c.Q <= 0 || c.Params["as"] != "" {
			continue
		}
		for _, o := range offers {
			typ, sub, _ := strings.Cut(o, "/")
			if (c.Type == "*" || c.Type == typ) && (c.SubType == "*" || c.SubType == sub) {
				return o
			}
		}
	}
	return ""
}

// notAcceptable is Kubernetes' 406 for an Accept header the server
// cannot answer.
func notAcceptable(r *http.Request, offers ...string) error {
	return newError(http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable,
		"only the following media types are accepted: %s (asked for %q)", strings.Join(offers, ", "), r.Header.Get("Accept"))
}
