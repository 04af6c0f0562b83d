package apiserver

// SecretsKeyRotatePath is where `flotilla secrets rotate-key` asks the
// server to rotate the key that encrypts Secrets at rest (POST, no body).
// It is a resource path (resource "encryptionkeys", name "secrets",
// subresource "rotate", verb create in group flotilla.dev), so RBAC grants
// it to cluster-admin (system:masters) only: no built-in role names it.
//
// The answer streams one JSON SecretsKeyProgress per line as the rotation
// goes; the last line has Step "retired" when it finished, or Step "error"
// and Message when it failed.
const SecretsKeyRotatePath = "/apis/flotilla.dev/v1alpha1/encryptionkeys/secrets/rotate"

// SecretsKeyProgress is one line of a key rotation's answer. It carries key
// ids, never keys.
type SecretsKeyProgress struct {
	// Step is "new-key", "reencrypt", "retired" or "error".
	Step      string   `json:"step"`
	Done      int      `json:"done,omitempty"`
	Total     int      `json:"total,omitempty"`
	NewKeyID  string   `json:"newKeyID,omitempty"`
	OldKeyIDs []string `json:"oldKeyIDs,omitempty"`
	Message   string   `json:"message,omitempty"`
}
