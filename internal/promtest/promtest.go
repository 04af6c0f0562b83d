// Package promtest reads Prometheus' text exposition format in tests: does
// a scrape have a family, and what is the value of one series.
package promtest

import (
	"strconv"
	"strings"
)

// HasFamily reports whether the scrape text declares the family name (its
// # TYPE line).
func HasFamily(text, name string) bool {
	for line := range strings.Lines(text) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" && f[2] == name {
			return true
		}
	}
	return false
}

// Value sums the samples of the series called name whose labels include
// every pair of labels; ok is false when none matches.
func Value(text, name string, labels map[string]string) (sum float64, ok bool) {
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name) || len(line) == len(name) {
			continue
		}
		rest := line[len(name):]
		var lbls string
		switch rest[0] {
		case '{':
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			lbls, rest = rest[1:end], rest[end+1:]
		case ' ':
		default:
			continue
		}
		match := true
		for k, v := range labels {
			if !strings.Contains(","+lbls+",", ","+k+"="+strconv.Quote(v)+",") {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum, ok = sum+v, true
	}
	return sum, ok
}

// Lines are the lines of text about name, for a failure's message.
func Lines(text, name string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.Contains(line, name) {
			b.WriteString(line)
		}
	}
	return b.String()
}
