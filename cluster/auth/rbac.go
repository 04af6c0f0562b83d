package auth

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/component-helpers/auth/rbac/validation"

	"github.com/flotilla-dev/flotilla/cluster/store"
)

// rbacResources are the kinds an RBAC snapshot is built from.
var rbacResources = []string{"clusterroles", "clusterrolebindings", "roles", "rolebindings"}

// maxCachedDecisions bounds a snapshot's decision cache; past it the cache
// starts again empty.
const maxCachedDecisions = 16384

// RBAC authorizes with Kubernetes' RBAC semantics over the Role,
// ClusterRole, RoleBinding and ClusterRoleBinding objects of a store, plus
// the built-in roles (BuiltinClusterRoles). Decisions come from an
// in-memory snapshot, rebuilt when an RBAC object changes, and are cached
// per snapshot. Create it with NewRBAC, keep it current with Run.
type RBAC struct {
	store store.Interface
	log   *slog.Logger
	snap  atomic.Pointer[snapshot]
	// rebuilt is closed and replaced after every rebuild (WaitRevision).
	mu      sync.Mutex
	rebuilt chan struct{}
}

// NewRBAC reads the RBAC objects of st once, so that decisions are right
// from the first request. Run keeps them current.
func NewRBAC(ctx context.Context, st store.Interface, log *slog.Logger) (*RBAC, error) {
	if log == nil {
		log = slog.Default()
	}
	a := &RBAC{store: st, log: log.With("component", "rbac"), rebuilt: make(chan struct{})}
	if err := a.rebuild(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Revision is the store revision the current snapshot was read at.
func (a *RBAC) Revision() int64 { return a.snap.Load().revision }

// Run watches the RBAC kinds and rebuilds the snapshot after each change,
// until ctx ends. The watches start before a first rebuild, so that no
// change between NewRBAC and Run is missed.
func (a *RBAC) Run(ctx context.Context) {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	for _, res := range rbacResources {
		ch, _ := a.store.Watch(ctx, res, store.ListOptions{}, a.Revision())
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.watch(ctx, res, ch, signal)
		}()
	}
	signal()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-changed:
		}
		if err := a.rebuild(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("reading RBAC objects; decisions keep the previous snapshot", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			signal()
		}
	}
}

// watch signals on every event of one resource, starting with ch (nil if
// it could not be opened), and watches again whenever the stream ends; the
// signal's rebuild lists whatever the gap held.
func (a *RBAC) watch(ctx context.Context, resource string, ch <-chan store.Event, signal func()) {
	for {
		if ch != nil {
			for range ch {
				signal()
			}
		}
		if ctx.Err() != nil {
			return
		}
		signal()
		var err error
		if ch, err = a.store.Watch(ctx, resource, store.ListOptions{}, a.Revision()); err != nil {
			// Compacted or closing: the rebuild catches up; try again soon.
			ch = nil
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// rebuild lists the RBAC objects and swaps in a new snapshot.
func (a *RBAC) rebuild(ctx context.Context) error {
	s := &snapshot{
		clusterRoles: map[string]*rbacv1.ClusterRole{},
		roles:        map[string]*rbacv1.Role{},
		roleBindings: map[string][]*rbacv1.RoleBinding{},
	}
	var rev int64
	for _, res := range rbacResources {
		objs, r, err := a.store.List(ctx, res, store.ListOptions{})
		if err != nil {
			return fmt.Errorf("rbac: list %s: %w", res, err)
		}
		rev = max(rev, r)
		for _, o := range objs {
			switch o := o.(type) {
			case *rbacv1.ClusterRole:
				s.clusterRoles[o.Name] = o
			case *rbacv1.ClusterRoleBinding:
				s.clusterBindings = append(s.clusterBindings, o)
			case *rbacv1.Role:
				s.roles[o.Namespace+"/"+o.Name] = o
			case *rbacv1.RoleBinding:
				s.roleBindings[o.Namespace] = append(s.roleBindings[o.Namespace], o)
			}
		}
	}
	s.revision = rev
	s.addBuiltins()
	s.aggregate()
	a.mu.Lock()
	a.snap.Store(s)
	close(a.rebuilt)
	a.rebuilt = make(chan struct{})
	a.mu.Unlock()
	return nil
}

// WaitRevision waits until the snapshot was read at rev or later (tests,
// and writers that want their RBAC change to be in force).
func (a *RBAC) WaitRevision(ctx context.Context, rev int64) error {
	for {
		a.mu.Lock()
		done, ch := a.snap.Load().revision >= rev, a.rebuilt
		a.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Authorize implements Authorizer.
func (a *RBAC) Authorize(u *User, at Attributes) (bool, string) {
	if u == nil {
		return false, "no user"
	}
	if slices.Contains(u.Groups, GroupMasters) {
		return true, ""
	}
	return a.snap.Load().decide(u, at)
}

// RulesFor returns the rules that apply to u in namespace (cluster-wide
// ones included), for SelfSubjectRulesReview.
func (a *RBAC) RulesFor(u *User, namespace string) []rbacv1.PolicyRule {
	s := a.snap.Load()
	var out []rbacv1.PolicyRule
	s.visitRules(u, namespace, func(r []rbacv1.PolicyRule) bool {
		out = append(out, r...)
		return false
	})
	return out
}

// snapshot is the RBAC objects at one revision, with built-ins added and
// aggregated ClusterRoles filled in.
type snapshot struct {
	revision        int64
	clusterRoles    map[string]*rbacv1.ClusterRole
	clusterBindings []*rbacv1.ClusterRoleBinding
	roles           map[string]*rbacv1.Role // "namespace/name"
	roleBindings    map[string][]*rbacv1.RoleBinding

	cache     sync.Map // decision key → bool
	cacheSize atomic.Int64
}

// addBuiltins adds the built-in ClusterRoles and ClusterRoleBindings whose
// names the store does not hold (an object of the same name in Git
// replaces a built-in, as an edited bootstrap role does in Kubernetes).
func (s *snapshot) addBuiltins() {
	for _, cr := range BuiltinClusterRoles() {
		if _, ok := s.clusterRoles[cr.Name]; !ok {
			s.clusterRoles[cr.Name] = cr
		}
	}
	have := map[string]bool{}
	for _, b := range s.clusterBindings {
		have[b.Name] = true
	}
	for _, b := range BuiltinClusterRoleBindings() {
		if !have[b.Name] {
			s.clusterBindings = append(s.clusterBindings, b)
		}
	}
}

// aggregate fills the rules of every ClusterRole with an aggregationRule
// from the ClusterRoles its selectors match, as Kubernetes' aggregation
// controller does: an aggregated role's own rules are replaced, and roles
// aggregate aggregated roles (admin takes edit, which takes view), so the
// passes repeat until nothing changes.
func (s *snapshot) aggregate() {
	names := slices.Sorted(maps.Keys(s.clusterRoles))
	for range len(names) + 1 {
		changed := false
		for _, name := range names {
			cr := s.clusterRoles[name]
			if cr.AggregationRule == nil {
				continue
			}
			var rules []rbacv1.PolicyRule
			seen := map[string]bool{}
			for _, sel := range cr.AggregationRule.ClusterRoleSelectors {
				ls, err := metav1.LabelSelectorAsSelector(&sel)
				if err != nil || ls.Empty() {
					continue
				}
				for _, other := range names {
					o := s.clusterRoles[other]
					if other == name || !ls.Matches(labels.Set(o.Labels)) {
						continue
					}
					for _, r := range o.Rules {
						if k := r.String(); !seen[k] {
							seen[k] = true
							rules = append(rules, r)
						}
					}
				}
			}
			if !equality.Semantic.DeepEqual(rules, cr.Rules) {
				agg := cr.DeepCopy()
				agg.Rules = rules
				s.clusterRoles[name] = agg
				changed = true
			}
		}
		if !changed {
			return
		}
	}
}

func (s *snapshot) decide(u *User, at Attributes) (bool, string) {
	key := decisionKey(u, at)
	if v, ok := s.cache.Load(key); ok {
		return v.(bool), ""
	}
	want := []rbacv1.PolicyRule{requestRule(at)}
	allowed := s.visitRules(u, at.Namespace, func(rules []rbacv1.PolicyRule) bool {
		ok, _ := validation.Covers(rules, want)
		return ok
	})
	if s.cacheSize.Add(1) > maxCachedDecisions {
		s.cache.Clear()
		s.cacheSize.Store(1)
	}
	s.cache.Store(key, allowed)
	return allowed, ""
}

// visitRules calls fn with the rules of each role bound to u that applies
// in namespace (cluster bindings always), until fn returns true.
func (s *snapshot) visitRules(u *User, namespace string, fn func([]rbacv1.PolicyRule) bool) bool {
	for _, b := range s.clusterBindings {
		if b.RoleRef.Kind != "ClusterRole" || !bindsUser(b.Subjects, "", u) {
			continue
		}
		if cr, ok := s.clusterRoles[b.RoleRef.Name]; ok && fn(cr.Rules) {
			return true
		}
	}
	if namespace == "" {
		return false
	}
	for _, b := range s.roleBindings[namespace] {
		if !bindsUser(b.Subjects, namespace, u) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch b.RoleRef.Kind {
		case "ClusterRole":
			if cr, ok := s.clusterRoles[b.RoleRef.Name]; ok {
				rules = cr.Rules
			}
		case "Role":
			if r, ok := s.roles[namespace+"/"+b.RoleRef.Name]; ok {
				rules = r.Rules
			}
		}
		if len(rules) > 0 && fn(rules) {
			return true
		}
	}
	return false
}

// bindsUser says whether one of subjects is u: a User by name, a Group u
// is in, or a ServiceAccount (user "system:serviceaccount:NS:NAME"; a
// RoleBinding's subject without a namespace means the binding's).
func bindsUser(subjects []rbacv1.Subject, bindingNS string, u *User) bool {
	for _, sub := range subjects {
		switch sub.Kind {
		case rbacv1.UserKind:
			if sub.Name == u.Username {
				return true
			}
		case rbacv1.GroupKind:
			if slices.Contains(u.Groups, sub.Name) {
				return true
			}
		case rbacv1.ServiceAccountKind:
			ns := sub.Namespace
			if ns == "" {
				ns = bindingNS
			}
			if ns != "" && u.Username == "system:serviceaccount:"+ns+":"+sub.Name {
				return true
			}
		}
	}
	return false
}

// requestRule is the one-verb, one-resource rule a request needs.
func requestRule(at Attributes) rbacv1.PolicyRule {
	if !at.ResourceRequest {
		return rbacv1.PolicyRule{Verbs: []string{at.Verb}, NonResourceURLs: []string{at.Path}}
	}
	r := rbacv1.PolicyRule{Verbs: []string{at.Verb}, APIGroups: []string{at.APIGroup}, Resources: []string{at.resourceString()}}
	if at.Name != "" {
		r.ResourceNames = []string{at.Name}
	}
	return r
}

func decisionKey(u *User, at Attributes) string {
	var b strings.Builder
	b.WriteString(u.Username)
	for _, g := range u.Groups {
		b.WriteByte(0)
		b.WriteString(g)
	}
	for _, f := range []string{at.Verb, at.APIGroup, at.Resource, at.Subresource, at.Namespace, at.Name, at.Path} {
		b.WriteByte(1)
		b.WriteString(f)
	}
	if at.ResourceRequest {
		b.WriteByte(2)
	}
	return b.String()
}
