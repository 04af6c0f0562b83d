package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

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

// serverPattern is one server of the group (DELETE removes it).
const serverPattern = "/apis/flotilla.dev/v1alpha1/servers/{name}"

// removeServerHandler removes a server from the store's group (RBAC: delete
// servers, cluster-admin). The last voter cannot be removed.
func removeServerHandler(n *raftlog.Node) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete {
			writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "DELETE a server to remove it from the group")
			return
		}
		name := r.PathValue("name")
		id, err := strconv.ParseUint(strings.TrimPrefix(name, "server-"), 10, 64)
		if err != nil || id == 0 {
			writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("%q is not a server's name (server-ID, as `flotilla get servers` shows)", name))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		switch err := n.RemoveMember(ctx, id); {
		case errors.Is(err, raftlog.ErrNotMember):
			writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("servers %q not found", name))
		case err != nil:
			writeStatus(w, http.StatusConflict, "Conflict", err.Error())
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Success",
				"details": map[string]string{"name": name, "group": "flotilla.dev", "kind": "servers"}})
		}
	})
}

// newServerRemoveCommand is `flotilla server remove NAME`.
func newServerRemoveCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a server from the store's group (a dead one, before a new server joins in its place)",
		Long: `Remove a server from the group of servers that replicate the store. The
group then counts a majority without it: remove a server that died for good
before joining a new one, so that the group never waits for a dead member.
The removed server's data dir cannot rejoin: wipe it, and join it again with
a new server join token (flotilla token create --server).`,
		Example: `  flotilla get servers
  flotilla server remove server-482913`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveServer(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "server %s removed\n", args[0])
			return nil
		},
	}
}
