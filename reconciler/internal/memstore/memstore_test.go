package memstore_test

import (
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
	"github.com/flotilla-dev/flotilla/reconciler/internal/memstore"
)

// TestConformance holds the test double to the store contract.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Interface {
		s := memstore.New()
		t.Cleanup(s.Close)
		return s
	})
}
