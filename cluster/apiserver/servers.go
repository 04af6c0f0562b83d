package apiserver

// ServersPath lists the servers of the store's Raft group as the server
// asked sees them (GET; a ServerList). It is a resource path (resource
// "servers" in group flotilla.dev, verb list), which the view role reads.
const ServersPath = "/apis/flotilla.dev/v1alpha1/servers"

// ServerList is the answer at ServersPath.
type ServerList struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Items      []ServerInfo `json:"items"`
}

// ServerInfo is one server of the group.
type ServerInfo struct {
	Name    string `json:"name"`    // "server-ID"
	ID      uint64 `json:"id"`      // its Raft ID
	Address string `json:"address"` // where its peers reach it ("" for a group of one)
	// Role is "leader", "follower", "candidate" or "learner"; "" when the
	// server asked does not know it (another server's, seen from a
	// follower).
	Role    string `json:"role"`
	Voter   bool   `json:"voter"`
	Term    uint64 `json:"term"`
	Applied uint64 `json:"applied,omitempty"` // the log index it applied, when known
	Commit  uint64 `json:"commit,omitempty"`
	// Health is "ok" for the server that answered and the leader it
	// follows, "unknown" for the others.
	Health string `json:"health"`
	// Self marks the server that answered.
	Self bool `json:"self,omitempty"`
}
