package svcproxy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// How a rendered table reaches the kernel: always one `nft -f -`
// transaction, applied whole or not at all, in one of three forms.
//
// Replace, when nothing else works (or works no more), as firewall.go
// does:
//
//	table ip T {}          (declare, so that the delete cannot fail)
//	delete table ip T
//	table ip T { … }       (the rendered text)
//
// Rewrite, when the table's objects are known (listed after an agent
// restart, or remembered) but not their contents, and once an hour as a
// safety net against anything having edited the table behind our back: it
// also leaves exactly the rendered table, but keeps the members of the
// dynamic affinity sets that are still wanted. (Replacing the table would
// make every client of a ClientIP service pick a new endpoint at every
// change to any service.)
//
//	table ip T {}
//	flush table ip T                   every rule (set members stay)
//	flush map ip T <static map>        each map/set that stays: refilled below
//	delete map ip T <unwanted>         maps and sets, then chains (rules and
//	delete chain ip T <unwanted>         maps no longer refer to them)
//	table ip T { … }                   redeclares what exists, adds the rest
//
// Update, the usual case: the difference between the last applied
// rendering and the new one. A change to a service is a change to a few
// map elements and perhaps a new pick chain, so this costs a few
// milliseconds where loading 1,000 services takes nft ~150 ms (it is the
// parsing of every element that costs, not the kernel).
//
//	add chain / add map|set            new objects, declared empty
//	flush chain + add rule             chains whose rules changed
//	delete element + add element       per map and set, removed or changed
//	                                   elements, then added or changed ones
//	flush chain, delete map|set,       objects no longer wanted
//	  delete chain

// replaceTransaction returns the nft script that replaces the table by want.
func replaceTransaction(table string, want *ruleset) string {
	return fmt.Sprintf("table ip %[1]s {}\ndelete table ip %[1]s\n", table) + want.text
}

// rewriteTransaction returns the nft script that rewrites the table, which
// holds the objects have, into want.
func rewriteTransaction(table string, have []object, want *ruleset) string {
	var w strings.Builder
	fmt.Fprintf(&w, "table ip %s {}\n", table)
	fmt.Fprintf(&w, "flush table ip %s\n", table)
	wanted := map[object]bool{}
	for _, o := range want.objects {
		wanted[o] = true
	}
	var unwantedChains []object
	for _, o := range have {
		switch {
		case o.kind == kindChain && !wanted[o]:
			unwantedChains = append(unwantedChains, o)
		case o.kind == kindChain:
		case !wanted[o]:
			fmt.Fprintf(&w, "delete %s ip %s %s\n", o.kind, table, o.name)
		case o.kind != kindAffinity:
			fmt.Fprintf(&w, "flush %s ip %s %s\n", o.kind, table, o.name)
		}
	}
	for _, o := range unwantedChains {
		fmt.Fprintf(&w, "delete chain ip %s %s\n", table, o.name)
	}
	w.WriteString(want.text)
	return w.String()
}

// updateTransaction returns the nft script that turns the table from old
// into new, both renderings; ok is false when it cannot (a base chain or a
// set's declaration changed: only a rewrite can do that). An empty script
// means nothing to do.
func updateTransaction(table string, old, new *ruleset) (script string, ok bool) {
	var w strings.Builder
	prefix := " ip " + table + " "
	for _, o := range new.objs {
		prev := old.byName[o.object]
		switch {
		case prev != nil && prev.head != o.head:
			return "", false
		case prev != nil:
		case o.kind == kindChain && o.head != "":
			return "", false
		case o.kind == kindChain:
			w.WriteString("add chain" + prefix + o.name + "\n")
		default:
			w.WriteString("add " + o.kind.String() + prefix + o.name + " { " + o.head + terminator(o.head) + " }\n")
		}
	}
	for _, o := range new.objs {
		prev := old.byName[o.object]
		if o.kind != kindChain || (prev != nil && slices.Equal(prev.rules, o.rules)) {
			continue
		}
		if prev != nil {
			w.WriteString("flush chain" + prefix + o.name + "\n")
		}
		for _, r := range o.rules {
			w.WriteString("add rule" + prefix + o.name + " " + r + "\n")
		}
	}
	for _, o := range new.objs {
		if o.kind != kindMap && o.kind != kindSet {
			continue
		}
		var prevElems []element
		if prev := old.byName[o.object]; prev != nil {
			prevElems = prev.elems
		}
		del, add := diffElements(prevElems, o.elems)
		for c := range slices.Chunk(del, elementsPerLine) {
			w.WriteString("delete element" + prefix + o.name + " { " + strings.Join(c, ", ") + " }\n")
		}
		for c := range slices.Chunk(add, elementsPerLine) {
			w.WriteString("add element" + prefix + o.name + " { " + strings.Join(c, ", ") + " }\n")
		}
	}
	var gone []*obj
	for _, o := range old.objs {
		if new.byName[o.object] == nil {
			gone = append(gone, o)
		}
	}
	for _, o := range gone {
		if o.kind == kindChain {
			w.WriteString("flush chain" + prefix + o.name + "\n")
		}
	}
	for _, o := range gone {
		if o.kind != kindChain {
			w.WriteString("delete " + o.kind.String() + prefix + o.name + "\n")
		}
	}
	for _, o := range gone {
		if o.kind == kindChain {
			w.WriteString("delete chain" + prefix + o.name + "\n")
		}
	}
	return w.String(), true
}

// elementsPerLine keeps the lines of an update short enough to read in an
// error message.
const elementsPerLine = 500

// diffElements returns the keys to delete (gone, or with another value)
// and the elements to add (new, or with another value), as nft writes them.
func diffElements(old, new []element) (del, add []string) {
	if slices.EqualFunc(old, new, sameElement) {
		return nil, nil
	}
	was := make(map[string]string, len(old))
	for _, e := range old {
		was[e.key] = e.value
	}
	is := make(map[string]string, len(new))
	for _, e := range new {
		is[e.key] = e.value
	}
	for _, e := range old {
		if v, ok := is[e.key]; !ok || v != e.value {
			del = append(del, e.key)
		}
	}
	for _, e := range new {
		if v, ok := was[e.key]; !ok || v != e.value {
			if e.value == "" {
				add = append(add, e.key)
			} else {
				add = append(add, e.key+" : "+e.value)
			}
		}
	}
	return del, add
}

func sameElement(a, b element) bool { return a.key == b.key && a.value == b.value }

// terminator ends a one-line declaration with ";" unless it already ends so.
func terminator(head string) string {
	if strings.HasSuffix(head, ";") {
		return ""
	}
	return ";"
}

// parseListing reads the objects of table T in the output of
// `nft -j list chains|sets|maps ip` (which, unlike listing the table, do
// not make nft fetch every element and rule: ~10 ms each instead of
// ~110 ms for 1,000 services). Sets whose name starts with "affinity-" are
// the dynamic affinity sets; anonymous sets ("__set0") are not objects.
func parseListing(out []byte, table string) ([]object, error) {
	var doc struct {
		Nftables []struct {
			Chain *struct{ Table, Name string } `json:"chain"`
			Set   *struct{ Table, Name string } `json:"set"`
			Map   *struct{ Table, Name string } `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parsing the nft listing: %w", err)
	}
	var objs []object
	for _, e := range doc.Nftables {
		switch {
		case e.Chain != nil && e.Chain.Table == table:
			objs = append(objs, object{kindChain, e.Chain.Name})
		case e.Map != nil && e.Map.Table == table && !strings.HasPrefix(e.Map.Name, "__"):
			objs = append(objs, object{kindMap, e.Map.Name})
		case e.Set != nil && e.Set.Table == table && strings.HasPrefix(e.Set.Name, "affinity-"):
			objs = append(objs, object{kindAffinity, e.Set.Name})
		case e.Set != nil && e.Set.Table == table && !strings.HasPrefix(e.Set.Name, "__"):
			objs = append(objs, object{kindSet, e.Set.Name})
		}
	}
	return objs, nil
}

// staleUDP returns the UDP frontend → backend pairs of old that new lacks
// (both sorted).
func staleUDP(old, new []udpFlow) []udpFlow {
	var out []udpFlow
	for _, f := range old {
		if _, found := slices.BinarySearchFunc(new, f, compareUDP); !found {
			out = append(out, f)
		}
	}
	return out
}
