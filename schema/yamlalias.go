package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// checkAliases refuses a YAML file whose aliases (*name) would expand a
// document beyond MaxDocumentExpandedBytes, or all documents together
// beyond MaxFileExpandedBytes, before anything expands them: a 74 KiB file
// can stand for gigabytes ("billion laughs"). It parses the file into
// yaml.v3's node tree, where an alias is a pointer to its anchor, and
// computes each anchor's expanded size once. The problem is located at the
// alias (or node) where the running size crosses the limit.
//
// A file with a syntax error is left to the decoder that reports it.
func checkAliases(name string, data []byte, lim Limits) Problems {
	if bytes.IndexByte(data, '&') < 0 {
		return nil // no anchor, so no alias that resolves
	}
	c := aliasCounter{memo: map[*yaml.Node]int64{}, busy: map[*yaml.Node]bool{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var fileTotal int64
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil
		}
		c.aliases = false
		var docTotal int64
		if n := c.walk(&doc, &docTotal, lim.MaxDocumentExpandedBytes); n != nil {
			return Problems{limitProblem(name, n.Line, n.Column, LimitDocumentExpandedBytes,
				fmt.Sprintf("document expands to more than %s%s", formatBytes(lim.MaxDocumentExpandedBytes), c.through()), lim.MaxDocumentExpandedBytes)}
		}
		fileTotal = saturate(fileTotal + docTotal)
		if fileTotal > lim.MaxFileExpandedBytes {
			at := &doc
			if len(doc.Content) > 0 {
				at = doc.Content[0]
			}
			return Problems{limitProblem(name, at.Line, at.Column, LimitFileExpandedBytes,
				fmt.Sprintf("the documents of this file expand to more than %s%s; this is the document where they cross it",
					formatBytes(lim.MaxFileExpandedBytes), c.through()), lim.MaxFileExpandedBytes)}
		}
	}
}

// aliasCounter computes the size of YAML nodes with their aliases
// expanded: about their JSON size (a scalar's text and two bytes, a
// collection's two brackets and one separator per element).
type aliasCounter struct {
	memo    map[*yaml.Node]int64 // expanded size of anchored nodes
	busy    map[*yaml.Node]bool  // anchored nodes being sized (a cycle)
	aliases bool                 // an alias was met in the current document
}

// maxSize is where sizes saturate, far beyond any limit.
const maxSize = int64(1) << 60

func saturate(n int64) int64 {
	if n > maxSize || n < 0 {
		return maxSize
	}
	return n
}

func (c *aliasCounter) through() string {
	if c.aliases {
		return " through YAML aliases"
	}
	return ""
}

// size is n's expanded size. Only anchored nodes are memoized: every other
// node is reached once through its parent, so the work is linear in the
// file.
func (c *aliasCounter) size(n *yaml.Node) int64 {
	if n == nil {
		return 0
	}
	if s, ok := c.memo[n]; ok {
		return s
	}
	if c.busy[n] {
		return 0 // an alias inside its own anchor: the decoder refuses it
	}
	if n.Anchor != "" {
		c.busy[n] = true
		defer delete(c.busy, n)
	}
	var s int64
	switch n.Kind {
	case yaml.ScalarNode:
		s = int64(len(n.Value)) + 2
	case yaml.AliasNode:
		s = c.size(n.Alias)
	default:
		s = 2
		for _, ch := range n.Content {
			s = saturate(s + c.size(ch) + 1)
		}
	}
	if n.Anchor != "" {
		c.memo[n] = s
	}
	return s
}

// walk adds the expanded size of n to total, element by element, and
// returns the node at which total first exceeds limit (an alias, when
// aliases are the cause), or nil.
func (c *aliasCounter) walk(n *yaml.Node, total *int64, limit int64) *yaml.Node {
	switch n.Kind {
	case yaml.AliasNode:
		c.aliases = true
		*total = saturate(*total + c.size(n))
	case yaml.ScalarNode:
		*total = saturate(*total + c.size(n))
	default:
		*total = saturate(*total + 2)
		for _, ch := range n.Content {
			if at := c.walk(ch, total, limit); at != nil {
				return at
			}
			*total = saturate(*total + 1)
		}
	}
	if *total > limit {
		return n
	}
	return nil
}
