package netfabric

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDumpRetriesInterruptedDumps(t *testing.T) {
	calls := 0
	got, err := Dump(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial
		}
		return []int{1, 2, 3}, nil
	})
	if err != nil || len(got) != 3 || calls != 3 {
		t.Fatalf("Dump = %v, %v after %d calls; want the whole list after 3", got, err, calls)
	}
	other := errors.New("permission denied")
	calls = 0
	if _, err := Dump(func() ([]int, error) { calls++; return nil, other }); !errors.Is(err, other) || calls != 1 {
		t.Fatalf("Dump with another error = %v after %d calls; want it at once", err, calls)
	}
	calls = 0
	if _, err := Dump(func() ([]int, error) { calls++; return nil, netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != dumpAttempts {
		t.Fatalf("Dump always interrupted = %v after %d calls; want the error after %d", err, calls, dumpAttempts)
	}
}
