package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/flotilla-dev/flotilla/cluster/apiclient"
	"github.com/flotilla-dev/flotilla/cluster/apiserver"
	"github.com/flotilla-dev/flotilla/cluster/raftlog"
)

// serversHandler serves apiserver.ServersPath from the Raft log's status.
func serversHandler(n *raftlog.Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "GET the servers")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(apiserver.ServerList{APIVersion: "flotilla.dev/v1alpha1", Kind: "ServerList", Items: serverInfos(n.Status())})
	})
}

// serverInfos is the group as st (one server's status) shows it.
func serverInfos(st raftlog.Status) []apiserver.ServerInfo {
	var out []apiserver.ServerInfo
	for _, m := range st.Members {
		s := apiserver.ServerInfo{Name: "server-" + strconv.FormatUint(m.ID, 10), ID: m.ID, Address: m.Addr, Voter: m.Voter,
			Term: st.Term, Health: "unknown"}
		switch {
		case m.ID == st.ID:
			s.Self, s.Role, s.Applied, s.Commit, s.Health = true, st.Role, st.Applied, st.Commit, "ok"
		case m.ID == st.Leader:
			s.Role, s.Health = "leader", "ok" // it leads this server's term
		}
		out = append(out, s)
	}
	return out
}

// printServers prints `flotilla get servers`.
func printServers(out io.Writer, c *apiclient.Client, servers []apiserver.ServerInfo, output string) error {
	if output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(apiserver.ServerList{APIVersion: "flotilla.dev/v1alpha1", Kind: "ServerList", Items: servers})
	}
	fmt.Fprintf(out, "%-12s %-10s %-6s %-8s %-10s %s\n", "NAME", "ROLE", "TERM", "APPLIED", "HEALTH", "ADDRESS")
	for _, s := range servers {
		role, applied, addr := s.Role, "-", s.Address
		if role == "" {
			role = "-"
		}
		if s.Self {
			applied = strconv.FormatUint(s.Applied, 10)
			role += " (answered)"
		}
		if addr == "" {
			addr = c.Server()
		}
		fmt.Fprintf(out, "%-12s %-10s %-6d %-8s %-10s %s\n", s.Name, role, s.Term, applied, s.Health, addr)
	}
	return nil
}
