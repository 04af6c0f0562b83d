package dns

// Resolver configuration files: reading the host's, writing a pod's.

import (
	"bufio"
	"bytes"
	"strings"
)

// Limits on a pod's search list, as kubelet's (MaxDNSSearchPaths,
// MaxDNSSearchListChars): what glibc and musl accept.
const (
	maxSearchPaths     = 32
	maxSearchListChars = 2048
)

// ResolvFile is what a resolv.conf says, as far as DNS for pods goes.
type ResolvFile struct {
	// Nameservers are the "nameserver" addresses, in order.
	Nameservers []string
	// Search is the search list: the last "search" or "domain" line, as
	// the C libraries read it, without trailing dots.
	Search []string
}

// ParseResolvConf reads a resolv.conf. Lines it does not know are skipped:
// it never fails.
func ParseResolvConf(data []byte) ResolvFile {
	var rf ResolvFile
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			rf.Nameservers = append(rf.Nameservers, f[1])
		case "domain", "search":
			if f[0] == "domain" {
				f = f[:2]
			}
			rf.Search = rf.Search[:0:0]
			for _, d := range f[1:] {
				if d = strings.TrimSuffix(d, "."); d != "" {
					rf.Search = append(rf.Search, d)
				}
			}
		}
	}
	return rf
}

// ResolvConf returns the /etc/resolv.conf of a pod in namespace with DNS
// policy ClusterFirst, as kubelet writes it: the cluster's search domains
// (<ns>.svc.<domain>, svc.<domain>, <domain>) then the host's
// (upstreamSearch) without duplicates, the cluster DNS nameserver, and
// ndots:5 so that names with up to four dots are tried in the cluster
// first. Host search domains beyond kubelet's limits (32 domains, 2048
// characters) are dropped. domain "" means "cluster.local".
func ResolvConf(nameserver string, namespace, domain string, upstreamSearch []string) []byte {
	domain = strings.Trim(domain, ".")
	if domain == "" {
		domain = "cluster.local"
	}
	search := []string{namespace + ".svc." + domain, "svc." + domain, domain}
	seen := map[string]bool{}
	for _, d := range search {
		seen[strings.ToLower(d)] = true
	}
	chars := len(strings.Join(search, " "))
	for _, d := range upstreamSearch {
		d = strings.TrimSuffix(strings.TrimSpace(d), ".")
		if d == "" || seen[strings.ToLower(d)] {
			continue
		}
		if len(search) == maxSearchPaths || chars+1+len(d) > maxSearchListChars {
			break
		}
		seen[strings.ToLower(d)] = true
		search = append(search, d)
		chars += 1 + len(d)
	}
	var b bytes.Buffer
	b.WriteString("search " + strings.Join(search, " ") + "\n")
	b.WriteString("nameserver " + nameserver + "\n")
	b.WriteString("options ndots:5\n")
	return b.Bytes()
}
