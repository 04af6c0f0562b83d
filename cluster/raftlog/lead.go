package raftlog

import (
	"context"
	"errors"

	"go.etcd.io/raft/v3/raftpb"
)

// WhileLeader runs fn each time this server becomes the leader, with a
// context that ends as soon as it is not the leader of that term any more
// (it lost an election, stepped down for want of a majority, handed the
// leadership over, or the Node stopped). It waits for fn to return before
// it goes on, so two terms' fn never run at once on this server; a
// deposed leader's writes that are still in flight are refused by the
// store (they were computed on an older revision). It returns when ctx
// ends or fn returns an error other than the end of its context.
func (n *Node) WhileLeader(ctx context.Context, fn func(ctx context.Context) error) error {
	watch, cancel := n.WatchLeadership()
	defer cancel()
	for {
		var l Leadership
		var ok bool
		select {
		case l, ok = <-watch:
			if !ok {
				return ErrStopped
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if !l.Leader {
			continue
		}
		n.cfg.Logger.Info("leading: starting the leader's work", "term", l.Term)
		termCtx, end := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fn(termCtx) }()
		lost, err := n.leadUntil(ctx, watch, l.Term, done)
		end()
		if lost {
			err = <-done
			n.cfg.Logger.Info("not leading any more: the leader's work stopped", "term", l.Term)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		if !lost {
			// fn returned on its own while still leading: wait for the
			// next term rather than run it again at once.
			n.cfg.Logger.Warn("the leader's work returned while leading", "term", l.Term)
		}
	}
}

// leadUntil waits until fn is done (lost=false, with its error) or the
// leadership of term ends (lost=true).
func (n *Node) leadUntil(ctx context.Context, watch <-chan Leadership, term uint64, done <-chan error) (lost bool, err error) {
	for {
		select {
		case err := <-done:
			return false, err
		case l, ok := <-watch:
			if !ok || !l.Leader || l.Term != term {
				return true, nil
			}
		case <-ctx.Done():
			return true, nil
		}
	}
}

// Solo is the Transport of a group that has only this server (`flotilla
// up`): there is nobody to send to, and it refuses to learn a peer.
type Solo struct{}

// Send implements Transport: a one-voter group sends nothing.
func (Solo) Send([]*raftpb.Message) {}

// SetPeer implements Transport.
func (Solo) SetPeer(uint64, string) {}
