package netfabric

import (
	"context"
	"log"
	"net"
)

// How a node agent wires the overlay: the pods' MTU comes from the overlay
// before New, the device is made after Init, and every gossip event (join,
// update, leave) hands SetPeers the whole current member list.
func ExampleFabric_SetPeers() {
	ctx := context.Background()
	_, podCIDR, _ := net.ParseCIDR("10.244.1.0/24") // from the server, stable
	ov := OverlayConfig{UnderlayIP: net.ParseIP("192.0.2.11")}
	mtu, err := OverlayMTU(ov) // 1450 over a 1500 link
	if err != nil {
		log.Fatal(err)
	}
	f, err := New(Config{PodCIDR: podCIDR, StateDir: "/var/lib/flotilla/net", MTU: mtu})
	if err != nil {
		log.Fatal(err)
	}
	if err := f.Init(ctx); err != nil {
		log.Fatal(err)
	}
	if err := f.InitOverlay(ctx, ov); err != nil {
		log.Fatal(err)
	}
	// Publish f.VTEPMAC() (and the pod CIDR, the underlay IP) in this
	// node's gossip metadata; on every membership change:
	_, other, _ := net.ParseCIDR("10.244.2.0/24")
	members := []Peer{{Node: "edge-2", UnderlayIP: net.ParseIP("192.0.2.12"), PodCIDR: other,
		VTEPMAC: VTEPMACFor(other)}}
	if err := f.SetPeers(ctx, members); err != nil {
		log.Print(err) // bad peers are named; the good ones are programmed
	}
}
