package join

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// FuzzParse: Parse never panics; what it accepts is valid, encodes back to a
// token that parses to the same value; what it refuses matches a sentinel or
// names a field, and never echoes the input.
func FuzzParse(f *testing.F) {
	ca := testCA(f)
	tok := Token{
		Server:         "https://192.0.2.10:6443",
		BootstrapToken: "abcdef.0123456789abcdef",
		GossipAddr:     "192.0.2.10:7946",
		CAFingerprint:  FingerprintDER(ca),
		CA:             ca,
	}
	good := tok.Encode()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:len(good)/2])
	f.Add("FLO1." + good[len(Prefix):])
	f.Add(Prefix)
	f.Add("")
	f.Add(encodeRaw(`{"server":"http://x:1","token":"abcdef.0123456789abcdef","gossip_addr":"x:1","ca_sha256":"` + strings.Repeat("0f", 32) + `"}`))
	f.Add(encodeRaw(`null`))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			if got.Server != "" || got.BootstrapToken != "" || got.CA != nil {
				t.Fatalf("Parse returned a token with an error: %v", err)
			}
			if !errors.Is(err, ErrForeign) && !errors.Is(err, ErrDamaged) && !strings.HasPrefix(err.Error(), "join: the token") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid token: %v", err)
		}
		again, err := Parse(got.Encode())
		if err != nil {
			t.Fatalf("re-encoded token does not parse: %v", err)
		}
		if again.String() != got.String() || again.BootstrapToken != got.BootstrapToken || !bytes.Equal(again.CA, got.CA) {
			t.Fatalf("round trip changed the token: %v vs %v", got, again)
		}
	})
}
