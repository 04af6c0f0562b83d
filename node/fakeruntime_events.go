package node

import (
	"context"
	"fmt"

	"github.com/flotilla-dev/flotilla/node/runtimeapi"
)

// The FakeRuntime's optional abilities and failures: events (EventWatcher),
// health (Pinger), an outage (SetDown), a hang (SetHang), a pod lost while
// the runtime was down (LosePod).

var (
	_ runtimeapi.EventWatcher = (*FakeRuntime)(nil)
	_ runtimeapi.Pinger       = (*FakeRuntime)(nil)
)

// EnableEvents makes WatchEvents stream: starts, exits (ExitContainer,
// StopPod) and removals. Without it WatchEvents returns
// ErrEventsUnsupported and the agent polls. Exits scripted with
// FakeBehavior.ExitAfter are seen only when polled: with events, script
// exits with ExitContainer.
func (f *FakeRuntime) EnableEvents() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = true
}

// SetDown makes the runtime fail as a dead one would: every call, Ping and
// a new WatchEvents return err, and live event streams end with it. nil
// brings it back (containers kept running, as conmon keeps them).
func (f *FakeRuntime) SetDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err != nil && f.downErr == nil:
		close(f.downCh)
	case err == nil && f.downErr != nil:
		f.downCh = make(chan struct{})
	}
	f.downErr = err
}

// SetHang makes every call block until its ctx ends, as a hung runtime
// would.
func (f *FakeRuntime) SetHang(hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = hang
}

// LosePod removes a pod without a call being recorded, as if it had been
// lost while the runtime was down.
func (f *FakeRuntime) LosePod(podID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, podID)
}

// available is the check at the start of every call: an error while the
// runtime is down; a block until ctx ends while it hangs.
func (f *FakeRuntime) available(ctx context.Context) error {
	f.mu.Lock()
	down, hang := f.downErr, f.hang
	f.mu.Unlock()
	if down != nil {
		return fmt.Errorf("fake runtime: %w", down)
	}
	if hang {
		<-ctx.Done()
		return fmt.Errorf("fake runtime hangs: %w", ctx.Err())
	}
	return nil
}

// Ping implements Pinger.
func (f *FakeRuntime) Ping(ctx context.Context) error {
	return f.available(ctx)
}

// WatchEvents implements EventWatcher.
func (f *FakeRuntime) WatchEvents(ctx context.Context, subscribed func(), onEvent func(runtimeapi.RuntimeEvent)) error {
	f.mu.Lock()
	if !f.events {
		f.mu.Unlock()
		return runtimeapi.ErrEventsUnsupported
	}
	if f.downErr != nil {
		err := f.downErr
		f.mu.Unlock()
		return fmt.Errorf("fake runtime events: %w", err)
	}
	ch := make(chan runtimeapi.RuntimeEvent, 4096)
	f.subs = append(f.subs, ch)
	down := f.downCh
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, c := range f.subs {
			if c == ch {
				f.subs = append(f.subs[:i], f.subs[i+1:]...)
				break
			}
		}
	}()
	subscribed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-down:
			f.mu.Lock()
			err := f.downErr
			f.mu.Unlock()
			return fmt.Errorf("fake runtime event stream ended: %w", err)
		case ev := <-ch:
			onEvent(ev)
		}
	}
}

// emitLocked sends an event of c to every live stream. A consumer 4096
// events behind is waited for (onEvent must not call the runtime).
func (f *FakeRuntime) emitLocked(action string, c *fakeContainer) {
	ev := runtimeapi.RuntimeEvent{Action: action, PodUID: c.uid, ContainerID: c.status.ID}
	for _, ch := range f.subs {
		ch <- ev
	}
}

// SetImageUser sets the user an image runs as (ImageUser); unset is root.
func (f *FakeRuntime) SetImageUser(image, user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.users == nil {
		f.users = map[string]string{}
	}
	f.users[image] = user
}

// ImageUser implements ImageUserReader.
func (f *FakeRuntime) ImageUser(ctx context.Context, image string) (string, error) {
	if err := f.available(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[image] {
		return "", fmt.Errorf("image %s: %w", image, runtimeapi.ErrNotFound)
	}
	return f.users[image], nil
}

// RuntimeVersion implements RuntimeVersioner.
func (f *FakeRuntime) RuntimeVersion(ctx context.Context) (string, error) {
	if err := f.available(ctx); err != nil {
		return "", err
	}
	return "fake://1.0", nil
}
