package apiclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/flotilla-dev/flotilla/cluster/apiserver"
)

// RotateSecretsKey asks the server to rotate the key of Secrets at rest
// (apiserver.SecretsKeyRotatePath) and calls progress with each line of
// its answer. It returns an error when the rotation failed or the answer
// ended before it finished.
func (c *Client) RotateSecretsKey(ctx context.Context, progress func(apiserver.SecretsKeyProgress)) error {
	resp, err := c.send(ctx, http.MethodPost, apiserver.SecretsKeyRotatePath, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var p apiserver.SecretsKeyProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			return fmt.Errorf("apiclient: rotate the secrets key: the server's answer: %w", err)
		}
		if p.Step == "error" {
			return errors.New(p.Message)
		}
		if progress != nil {
			progress(p)
		}
		if p.Step == "retired" {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("apiclient: rotate the secrets key: %w (see the server's log: a rotation cut off goes on or leaves both keys, and may be run again)", err)
	}
	return errors.New("apiclient: rotate the secrets key: the answer ended before the rotation finished (see the server's log; it may be run again)")
}
