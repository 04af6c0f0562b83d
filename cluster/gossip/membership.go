// Package gossip is cluster membership for Flotilla: which servers and agents
// are alive, what each one announces about itself (Meta: role, API address,
// tunnel IP, pod CIDR, VTEP MAC), and who left or failed. It runs
// hashicorp/memberlist (SWIM gossip with failure detection) tuned to declare a
// killed node Failed within seconds on a LAN, encrypted with the cluster key.
//
// The overlay (netfabric) programs its peer table from the events, and the
// node lifecycle reconciler turns Failed into a NotReady node; both keep
// working while the API server is down, because gossip needs no server.
package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership is this process's member of the cluster. Its methods are safe
// for concurrent use.
type Membership struct {
	cfg Config
	log *slog.Logger
	d   *delegate
	hub *hub
	ml  *memberlist.Memberlist

	joinMu sync.Mutex // one Join at a time (NotifyMerge reports to it)

	mu       sync.Mutex // guards left and shutdown, and orders Leave/Shutdown
	left     bool
	shutdown bool
	meta     Meta // the local Meta, as last set

	eventsOnce sync.Once
	events     <-chan Event
}

// New validates cfg and starts a member that is alone in its cluster until
// Join. The listener is bound when New returns.
func New(cfg Config) (*Membership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	meta, err := encodeMeta(cfg.Meta, false)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeName)
	h := newHub(log)
	keyring, err := memberlist.NewKeyring(nil, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("gossip: the cluster key: %w", err)
	}
	d := &delegate{name: cfg.NodeName, log: log, hub: h, meta: meta, keyring: keyring}
	ml, err := memberlist.Create(cfg.memberlistConfig(d))
	if err != nil {
		return nil, fmt.Errorf("gossip: starting member %q on %s:%d: %w", cfg.NodeName, cfg.BindAddr, cfg.BindPort, err)
	}
	m := &Membership{cfg: cfg, log: log, d: d, hub: h, ml: ml, meta: cfg.Meta}
	log.Info("gossip member started", "addr", m.Local().Addr.String(), "role", string(cfg.Meta.Role))
	return m, nil
}

// Join contacts the members at addrs ("host:port"; the port defaults to the
// local BindPort) and merges their view of the cluster with this one. It
// succeeds if at least one of them answered; else the error names each
// address and why, and matches ErrKeyMismatch or ErrNameTaken when that was
// a cause. Join returns early with ctx's error if ctx ends; the attempt in
// flight then finishes in the background within memberlist's TCP timeout.
func (m *Membership) Join(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("gossip: Join needs at least one address")
	}
	if m.isShutdown() {
		return ErrShutdown
	}
	done := make(chan error, 1)
	go func() { done <- m.join(addrs) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("gossip: joining %s: %w", strings.Join(addrs, ", "), ctx.Err())
	}
}

func (m *Membership) join(addrs []string) error {
	m.joinMu.Lock()
	defer m.joinMu.Unlock()
	var errs []error
	joined := 0
	for _, addr := range addrs {
		finish := m.d.startJoin()
		_, err := m.ml.Join([]string{addr})
		if taken := finish(); taken != nil {
			errs = append(errs, fmt.Errorf("gossip: cannot join %s: %w", addr, taken))
			continue
		}
		if err != nil {
			errs = append(errs, joinError(addr, firstError(err)))
			continue
		}
		joined++
	}
	if joined > 0 {
		for _, err := range errs {
			m.log.Warn("gossip could not join through one of the addresses", "err", err)
		}
		m.log.Info("gossip joined the cluster", "through", joined, "members", len(m.hub.list()))
		return nil
	}
	return errors.Join(errs...)
}

// firstError unwraps memberlist's multierror ("1 error occurred: * failed to
// join X: …") down to its first cause, without its "failed to join X: ".
func firstError(err error) error {
	if me, ok := err.(interface{ WrappedErrors() []error }); ok {
		if es := me.WrappedErrors(); len(es) > 0 {
			err = es[0]
		}
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "failed to join ") {
		if i := strings.Index(msg, ": "); i > 0 {
			return errors.New(msg[i+2:])
		}
	}
	return err
}

// Members returns the members alive (or suspected, not yet declared failed)
// as this member sees them, itself included, sorted by name. The result is a
// copy; it agrees with the events delivered so far.
func (m *Membership) Members() []Member { return m.hub.list() }

// Local returns this member, with its current Meta.
func (m *Membership) Local() Member {
	local, _ := m.d.member(m.ml.LocalNode())
	return local
}

// UpdateMeta replaces this member's Meta (NodeName may be left empty) and
// broadcasts it; the others get an Updated event. It returns once the
// broadcast was sent, or with an error when ctx ends first (the update still
// spreads) or meta is invalid or too big (nothing changes).
func (m *Membership) UpdateMeta(ctx context.Context, meta Meta) error {
	if meta.NodeName == "" {
		meta.NodeName = m.cfg.NodeName
	} else if meta.NodeName != m.cfg.NodeName {
		return fmt.Errorf("gossip: UpdateMeta: Meta.NodeName %q differs from this member's %q", meta.NodeName, m.cfg.NodeName)
	}
	b, err := encodeMeta(meta, false)
	if err != nil {
		return err
	}
	m.mu.Lock()
	switch {
	case m.shutdown:
		err = ErrShutdown
	case m.left:
		err = errors.New("gossip: UpdateMeta after Leave")
	default:
		m.meta = meta
		m.d.setMeta(b)
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- m.ml.UpdateNode(timeout) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("gossip: broadcasting the new metadata: %w", err)
	}
	return nil
}

// Leave tells the cluster that this member goes away on purpose, so that
// the others see Left, not Failed. It takes two broadcasts (see NotifyLeave
// in delegate.go), each given up to half of timeout (0 means 5 s) to spread.
// Call Shutdown afterwards. Leave twice is a no-op.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return ErrShutdown
	}
	if m.left {
		return nil
	}
	m.left = true
	half := timeout / 2
	if b, err := encodeMeta(m.meta, true); err == nil {
		m.d.setMeta(b)
		if err := m.ml.UpdateNode(half); err != nil {
			m.log.Warn("gossip: the leaving flag did not finish spreading; some members may report this one Failed", "err", err)
		}
	}
	if err := m.ml.Leave(timeout - half); err != nil {
		return fmt.Errorf("gossip: leaving the cluster: %w", err)
	}
	m.log.Info("gossip member left the cluster")
	return nil
}

// Shutdown stops the member at once, without telling anyone: without Leave
// first, the others see it Failed. Every event channel is closed; events not
// yet read are discarded. Shutdown twice is a no-op.
func (m *Membership) Shutdown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return nil
	}
	m.shutdown = true
	err := m.ml.Shutdown()
	m.hub.close()
	if err != nil {
		return fmt.Errorf("gossip: shutting down: %w", err)
	}
	return nil
}

func (m *Membership) isShutdown() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdown
}

// Subscribe returns a new stream of membership events and a function that
// ends it (its channel then closes). The stream starts with one Joined event
// per current member (this one included), so Members need not be read
// separately and nothing falls between the two; then every change follows in
// the order memberlist reported it.
//
// Delivery: memberlist reports changes from its own goroutines; they are
// queued without ever blocking it, and one goroutine per subscription sends
// them on the (unbuffered) channel. A subscriber that stops reading loses the
// oldest queued events once more than 4096 wait (logged as a warning; read
// Members to resync). Shutdown closes every channel.
func (m *Membership) Subscribe() (<-chan Event, func()) { return m.hub.subscribe() }

// Events returns one shared stream, as Subscribe, created on first call and
// ended by Shutdown; every call returns the same channel. For one consumer:
// two readers would split the events between them.
func (m *Membership) Events() <-chan Event {
	m.eventsOnce.Do(func() { m.events, _ = m.hub.subscribe() })
	return m.events
}

// SetKeys makes primary the key this member encrypts with, and accepts
// messages under primary and under each of others; every other key is
// dropped. A rotation installs the new key everywhere first (SetKeys(old,
// new)), then makes it primary (SetKeys(new, old)), then drops the old one
// (SetKeys(new)): at no step does a member send what another cannot read.
func (m *Membership) SetKeys(primary []byte, others ...[]byte) error {
	kr := m.d.keyring
	for _, k := range append([][]byte{primary}, others...) {
		if len(k) != KeySize {
			return fmt.Errorf("gossip: a key of %d bytes; the cluster key is %d bytes", len(k), KeySize)
		}
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("gossip: install a key: %w", err)
		}
	}
	if err := kr.UseKey(primary); err != nil {
		return fmt.Errorf("gossip: use the new key: %w", err)
	}
	keep := append([][]byte{primary}, others...)
	for _, k := range kr.GetKeys() {
		if !slices.ContainsFunc(keep, func(x []byte) bool { return bytes.Equal(x, k) }) {
			if err := kr.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: drop an old key: %w", err)
			}
		}
	}
	return nil
}
