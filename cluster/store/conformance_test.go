package store_test

import (
	"testing"

	"github.com/flotilla-dev/flotilla/cluster/store"
	"github.com/flotilla-dev/flotilla/cluster/store/encrypt"
	"github.com/flotilla-dev/flotilla/cluster/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Interface { return store.MemoryFor(t) })
	})
	t.Run("disk", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Interface {
			s, err := store.Open(store.Config{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			return s
		})
	})
	// The same with Secrets encrypted at rest.
	t.Run("disk-encrypted", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Interface {
			s, err := store.Open(store.Config{Dir: t.TempDir(), Keys: newKeySet(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			return s
		})
	})
}

// newKeySet is a key set of one new key, for a store with Secrets
// encrypted at rest.
func newKeySet(t *testing.T) *encrypt.KeySet {
	t.Helper()
	k, err := encrypt.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := encrypt.NewKeySet(k)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}
