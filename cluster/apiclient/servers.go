package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// Servers lists the servers of the cluster's Raft group.
func (c *Client) Servers(ctx context.Context) ([]apiserver.ServerInfo, error) {
	data, err := c.call(ctx, http.MethodGet, apiserver.ServersPath, nil, nil)
	if err != nil {
		return nil, err
	}
	var l apiserver.ServerList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("apiclient: servers: %w", err)
	}
	return l.Items, nil
}

// RemoveServer removes a server ("server-ID", as Servers names it) from
// the store's Raft group.
func (c *Client) RemoveServer(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodDelete, apiserver.ServersPath+"/"+url.PathEscape(name), nil, nil)
	return err
}
