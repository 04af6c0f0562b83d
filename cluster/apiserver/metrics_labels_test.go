package apiserver

import (
	"net/http/httptest"
	"slices"
	"testing"
)

// TestBoundLabelsEmptyResource: a resource path with an empty resource
// ("/api////x", as the handler sees it without a mux's cleaning) keeps no
// label the client made up; Prometheus panics on one that is not UTF-8.
func TestBoundLabelsEmptyResource(t *testing.T) {
	at := requestAttributes(httptest.NewRequest("POST", "/api////\x8f", nil))
	lv := boundLabels([]string{"CREATE", at.APIGroup, "", at.Resource, at.Subresource, "cluster"})
	if want := []string{"CREATE", "", "", "other", "", "cluster"}; !slices.Equal(lv, want) {
		t.Errorf("labels %q, want %q", lv, want)
	}
}
