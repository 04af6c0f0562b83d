package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// SaveSnapshot asks the server for a snapshot of the cluster, its keys
// encrypted under passphrase, and copies it to w; it returns its size.
func (c *Client) SaveSnapshot(ctx context.Context, passphrase string, w io.Writer) (int64, error) {
	body, err := json.Marshal(apiserver.SnapshotRequest{Passphrase: passphrase})
	if err != nil {
		return 0, err
	}
	resp, err := c.send(ctx, http.MethodPost, apiserver.SnapshotSavePath, nil, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("apiclient: the snapshot was cut off after %d bytes: %w", n, err)
	}
	return n, nil
}
