package store

import (
	"context"
	"fmt"
	"testing"
)

func BenchmarkCreate(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Create(ctx, pod("ns", fmt.Sprintf("p%d", i), map[string]string{"app": "web"}, "n1")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	p := pod("ns", "p", map[string]string{"app": "web"}, "n1")
	if _, err := s.Create(ctx, p); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		p.Labels["i"] = fmt.Sprint(i)
		if _, err := s.Update(ctx, p); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdateNoop(b *testing.B) {
	s := MemoryFor(b)
	ctx := context.Background()
	p := pod("ns", "p", map[string]string{"app": "web"}, "n1")
	if _, err := s.Create(ctx, p); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Update(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := MemoryFor(b)
			ctx := context.Background()
			for i := range n {
				node := fmt.Sprintf("n%d", i%10)
				if _, err := s.Create(ctx, pod(fmt.Sprintf("ns%d", i%5), fmt.Sprintf("p%d", i), nil, node)); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				objs, _, err := s.List(ctx, "pods", ListOptions{FieldSelector: "spec.nodeName=n3"})
				if err != nil || len(objs) != n/10 {
					b.Fatalf("%d objects, err %v", len(objs), err)
				}
			}
		})
	}
}

// BenchmarkCreateWatched is Create with 100 watchers draining their events.
func BenchmarkCreateWatched(b *testing.B) {
	s := MemoryFor(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 100 {
		w, err := s.Watch(ctx, "pods", ListOptions{}, 0)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range w {
			}
		}()
	}
	i := 0
	for b.Loop() {
		if _, err := s.Create(ctx, pod("ns", fmt.Sprintf("p%d", i), nil, "")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
