package gossip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestMetaRoundTripAndSize(t *testing.T) {
	full := Meta{
		Role:     RoleServer,
		NodeName: "server-1.site-a.example",
		APIAddr:  "https://[2001:db8::1]:6443",
		TunnelIP: "2001:db8::1",
		PodCIDR:  "10.244.255.0/24",
		VTEPMAC:  "02:42:ac:11:00:02",
	}
	b, err := encodeMeta(full, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)+leavingFlagSize > MetaMaxSize/2 {
		t.Errorf("a full Meta takes %d bytes, want it well under %d", len(b), MetaMaxSize)
	}
	for _, leaving := range []bool{false, true} {
		b, err := encodeMeta(full, leaving)
		if err != nil {
			t.Fatal(err)
		}
		got, gotLeaving, err := decodeMeta(b)
		if err != nil || got != full || gotLeaving != leaving {
			t.Errorf("round trip (leaving %v) = %+v %v %v, want %+v", leaving, got, gotLeaving, err, full)
		}
	}
	t.Logf("full Meta: %d bytes: %s", len(b), b)
}

func TestMetaLimitKeepsRoomForTheLeavingFlag(t *testing.T) {
	m := Meta{Role: RoleServer, APIAddr: "https://x"}
	base, _ := encodeMeta(m, false)
	m.APIAddr += strings.Repeat("a", MetaMaxSize-len(base)-leavingFlagSize)
	b, err := encodeMeta(m, false)
	if err != nil {
		t.Fatalf("Meta just at the limit refused: %v", err)
	}
	if lb, err := encodeMeta(m, true); err != nil || len(lb) > MetaMaxSize {
		t.Fatalf("leaving form of a Meta at the limit: %d bytes, %v", len(lb), err)
	}
	m.APIAddr += "a"
	if _, err := encodeMeta(m, false); err == nil || !strings.Contains(err.Error(), "512") {
		t.Fatalf("Meta one byte over: %v, want an error naming the limit (at-limit form was %d bytes)", err, len(b))
	}
}

func TestMetaValidate(t *testing.T) {
	for _, tc := range []struct {
		meta Meta
		want string
	}{
		{Meta{}, "Meta.Role is required"},
		{Meta{Role: "master"}, `Meta.Role "master"`},
		{Meta{Role: RoleAgent, TunnelIP: "10.0.0"}, "TunnelIP"},
		{Meta{Role: RoleAgent, PodCIDR: "10.244.0.0"}, "PodCIDR"},
		{Meta{Role: RoleAgent, VTEPMAC: "zz:00"}, "VTEPMAC"},
	} {
		err := tc.meta.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.meta, err, tc.want)
		}
	}
}

func TestDecodeMetaToleratesNewerFieldsAndRefusesGarbage(t *testing.T) {
	got, _, err := decodeMeta([]byte(`{"v":2,"r":"agent","n":"a","zz":"future"}`))
	if err != nil || got.Role != RoleAgent || got.NodeName != "a" {
		t.Errorf("newer Meta = %+v, %v", got, err)
	}
	for _, b := range []string{"", "not json", `{"r":"agent"}`} {
		if _, _, err := decodeMeta([]byte(b)); err == nil {
			t.Errorf("decodeMeta(%q) succeeded", b)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	key := bytes.Repeat([]byte{1}, KeySize)
	ok := Config{NodeName: "node-1", Key: key, Meta: Meta{Role: RoleAgent}}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.NodeName = "" }, "Config.NodeName is required"},
		{func(c *Config) { c.NodeName = "Node_1" }, "Config.NodeName"},
		{func(c *Config) { c.Key = nil }, "Config.Key is required"},
		{func(c *Config) { c.Key = key[:16] }, "Config.Key is 16 bytes"},
		{func(c *Config) { c.BindAddr = "localhost" }, "Config.BindAddr"},
		{func(c *Config) { c.BindPort = 70000 }, "Config.BindPort"},
		{func(c *Config) { c.AdvertiseAddr = "host" }, "Config.AdvertiseAddr"},
		{func(c *Config) { c.Meta.NodeName = "other" }, "Config.Meta.NodeName"},
		{func(c *Config) { c.Meta.Role = "" }, "Meta.Role is required"},
	} {
		cfg := ok
		tc.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with %s: %v", tc.want, err)
		}
	}
	cfg, err := ok.withDefaults()
	if err != nil || cfg.BindPort != DefaultPort || cfg.BindAddr != "0.0.0.0" || cfg.Meta.NodeName != "node-1" {
		t.Errorf("defaults = %+v, %v", cfg, err)
	}
}

func TestLogBridgeRoutesMemberlistLinesToSlogDebug(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Logger: log}
	ml := cfg.memberlistConfig(&delegate{})
	ml.Logger.Printf("[WARN] memberlist: Got ping for unexpected node %s", "x")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if rec["level"] != "DEBUG" || rec["msg"] != "Got ping for unexpected node x" || rec["memberlist_level"] != "WARN" {
		t.Errorf("record = %v", rec)
	}
}

func testMember(name string, i int) Member {
	return Member{Name: name, Addr: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", 7000+i)), Meta: agentMeta(i)}
}

func TestHubReplaysSuppressesNoopUpdatesAndCloses(t *testing.T) {
	h := newHub(slog.New(slog.DiscardHandler))
	h.record(Event{Type: Joined, Member: testMember("b", 2)})
	h.record(Event{Type: Joined, Member: testMember("a", 1)})
	ch, cancel := h.subscribe()
	defer cancel()
	for _, want := range []string{"a", "b"} {
		if ev := <-ch; ev.Type != Joined || ev.Member.Name != want {
			t.Fatalf("replay gave %v %s, want Joined %s", ev.Type, ev.Member.Name, want)
		}
	}
	h.record(Event{Type: Updated, Member: testMember("a", 1)}) // no change: swallowed
	changed := testMember("a", 1)
	changed.Meta.PodCIDR = "10.244.50.0/24"
	h.record(Event{Type: Updated, Member: changed})
	h.record(Event{Type: Failed, Member: testMember("b", 2)})
	if ev := <-ch; ev.Type != Updated || ev.Member.Meta.PodCIDR != "10.244.50.0/24" {
		t.Fatalf("got %v %+v, want the real Updated", ev.Type, ev.Member)
	}
	if ev := <-ch; ev.Type != Failed || ev.Member.Name != "b" {
		t.Fatalf("got %v %s, want Failed b", ev.Type, ev.Member.Name)
	}
	if got := h.list(); len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("list = %v", got)
	}
	h.close()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after close")
	}
	late, _ := h.subscribe()
	if _, ok := <-late; ok {
		t.Fatal("subscription after close is open")
	}
}

func TestSlowSubscriberNeverBlocksAndDropsOldest(t *testing.T) {
	h := newHub(slog.New(slog.DiscardHandler))
	ch, cancel := h.subscribe()
	defer cancel()
	const n = subscriberQueueMax + 10
	for i := range n { // would deadlock if record blocked
		m := testMember("a", 1)
		m.Meta.PodCIDR = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
		h.record(Event{Type: Updated, Member: m})
	}
	first := <-ch
	if first.Member.Meta.PodCIDR == "10.0.0.0/24" {
		// The pump took event 0 before the queue filled up, and held it.
		first = <-ch
	}
	// Events 1…9 were dropped: the oldest go first.
	if want := "10.0.10.0/24"; first.Member.Meta.PodCIDR != want {
		t.Errorf("first queued event after overflow has PodCIDR %s, want %s", first.Member.Meta.PodCIDR, want)
	}
	count := 1
	for count < subscriberQueueMax {
		<-ch
		count++
	}
}
