package netfabric

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/flotilla-dev/flotilla/internal/atomicfile"
)

// ErrPoolExhausted means every address of the node's pod CIDR is taken.
var ErrPoolExhausted = errors.New("pod CIDR has no free address")

// record is what StateDir keeps for one pod: enough to find, repair and undo
// its network after an agent restart or a reboot. The record is written
// before any kernel object is made, so a crash never leaks an unrecorded
// namespace, veth or address.
type record struct {
	UID       string `json:"uid"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// Key is the short hash that names the netns, the host veth and this file.
	Key      string `json:"key"`
	NetNS    string `json:"netns"`    // name under /run/netns
	HostVeth string `json:"hostVeth"` // root-namespace end of the pod's veth
	IP       string `json:"ip"`
}

func (r *record) addr() netip.Addr {
	a, _ := netip.ParseAddr(r.IP)
	return a
}

// store is the IPAM and the pod records, held in memory and mirrored to one
// JSON file per pod in dir (written atomically: temp file, fsync, rename).
// The set of used addresses is derived from the records, so the two can
// never disagree.
type store struct {
	dir  string
	pool netip.Prefix
	log  *slog.Logger

	mu   sync.Mutex
	pods map[string]*record    // by UID
	used map[netip.Addr]string // address → UID
	next netip.Addr            // where the next allocation starts looking
}

// openStore loads every record in dir. Records it cannot read are logged
// and skipped (never deleted: an operator may want them); a record whose
// address is outside the pool (the pod CIDR changed) is kept but reserves
// nothing, and Setup gives the pod a new address.
func openStore(dir string, pool netip.Prefix, log *slog.Logger) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	s := &store{dir: dir, pool: pool, log: log,
		pods: map[string]*record{}, used: map[netip.Addr]string{}}
	s.next = s.first()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading state dir %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") { // a write cut short by a crash
			os.Remove(filepath.Join(dir, name))
			continue
		}
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading pod record %s: %w", name, err)
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || r.UID == "" || r.Key+".json" != name {
			log.Warn("skipping unreadable pod record", "file", name, "err", err)
			continue
		}
		s.pods[r.UID] = &r
		a := r.addr()
		if !s.allocatable(a) {
			log.Warn("pod record address is outside the pod CIDR", "pod", r.UID, "ip", r.IP, "cidr", pool)
			continue
		}
		if other, dup := s.used[a]; dup {
			log.Warn("two pod records hold one address", "ip", r.IP, "pod", r.UID, "other", other)
			continue
		}
		s.used[a] = r.UID
	}
	return s, nil
}

// first and last bound the allocatable range: the network address, the
// gateway (network+1) and the broadcast address are never handed out.
func (s *store) first() netip.Addr { return s.pool.Masked().Addr().Next().Next() }

func (s *store) last() netip.Addr {
	a := s.pool.Masked().Addr().As4()
	host := uint32(1)<<(32-s.pool.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).Prev()
}

func (s *store) allocatable(a netip.Addr) bool {
	return a.IsValid() && s.pool.Contains(a) && a.Compare(s.first()) >= 0 && a.Compare(s.last()) <= 0
}

func (s *store) get(uid string) (record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.pods[uid]
	if !ok {
		return record{}, false
	}
	return *r, true
}

func (s *store) uids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.pods))
	for uid := range s.pods {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out
}

// allocate gives r a free address (or keeps the one it holds when that is
// still valid) and persists r. Allocation goes round the pool rather than
// reusing the lowest free address, so a freed address rests before reuse.
func (s *store) allocate(r record) (record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for uid, other := range s.pods {
		if other.Key == r.Key && uid != r.UID {
			return record{}, fmt.Errorf("pod %s: name %s already taken by pod %s", r.UID, r.Key, uid)
		}
	}
	a, _ := netip.ParseAddr(r.IP)
	if !s.allocatable(a) || (s.used[a] != "" && s.used[a] != r.UID) {
		a = netip.Addr{}
		for cand, n := s.next, 0; n < s.size(); n++ {
			if !s.allocatable(cand) {
				cand = s.first()
			}
			if _, taken := s.used[cand]; !taken {
				a = cand
				break
			}
			cand = cand.Next()
		}
		if !a.IsValid() {
			return record{}, fmt.Errorf("allocating an address for pod %s in %s: %w", r.UID, s.pool, ErrPoolExhausted)
		}
		s.next = a.Next()
	}
	r.IP = a.String()
	if err := s.write(&r); err != nil {
		return record{}, err
	}
	s.used[a] = r.UID
	if old, ok := s.pods[r.UID]; ok {
		if old.addr() != a && s.used[old.addr()] == r.UID {
			delete(s.used, old.addr())
		}
		if old.Key != r.Key {
			os.Remove(filepath.Join(s.dir, old.Key+".json"))
		}
	}
	s.pods[r.UID] = &r
	return r, nil
}

// size is the number of allocatable addresses.
func (s *store) size() int { return 1<<(32-s.pool.Bits()) - 3 }

// release forgets uid's record and frees its address.
func (s *store) release(uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.pods[uid]
	if !ok {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, r.Key+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing record of pod %s: %w", uid, err)
	}
	if s.used[r.addr()] == uid {
		delete(s.used, r.addr())
	}
	delete(s.pods, uid)
	return nil
}

func (s *store) write(r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding record of pod %s: %w", r.UID, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, r.Key+".json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing record of pod %s: %w", r.UID, err)
	}
	return nil
}
