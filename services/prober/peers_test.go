package prober_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-net/switchboard/pkg/netnstest"
	"github.com/switchboard-net/switchboard/pkg/service"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
	"github.com/switchboard-net/switchboard/services/prober"
)

// childEnv makes the test binary run as a prober (see TestMain).
const childEnv = "SWITCHBOARD_PROBER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		service.Main(prober.Spec())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPeersAcrossNamespaces runs a second prober (this test binary,
// re-executed) in a network namespace at the far end of a veth pair. The
// prober here discovers it by multicast on that link only, measures the
// RTT to it, and runs a bandwidth test to it without being told its
// address. Both share a discovery key.
func TestPeersAcrossNamespaces(t *testing.T) {
	l := netnstest.NewLink(t, true)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	group := "239.255.74.9:7409"
	far := l.Addr[1].String()
	keyFile := filepath.Join(t.TempDir(), "discovery.key")
	if err := os.WriteFile(keyFile, []byte("peers-test-shared-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.NS[1], exe,
		"--grpc-addr="+far+":7400", "--admin-addr=127.0.0.1:0", "--bandwidth-addr="+far+":7402", "--insecure",
		"--registry-addr=", "--discovery", "--discovery-key-file="+keyFile, "--discovery-group="+group, "--discovery-interfaces="+l.Dev[1],
		"--discovery-interval=200ms", "--name=far", "--log-level=warn")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	_, c := start(t, "--discovery", "--discovery-key-file="+keyFile, "--discovery-group="+group, "--discovery-interfaces="+l.Dev[0], "--discovery-interval=200ms", "--name=near")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var peer *proberv1.Peer
	for peer == nil && ctx.Err() == nil {
		_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Peers{Peers: &proberv1.PeersSpec{
			Wait: durationpb.New(300 * time.Millisecond), MeasureRtt: true}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range res.GetPeers().GetPeers() {
			if p.GetName() == "far" {
				peer = p
			}
		}
	}
	if peer == nil {
		t.Fatal("the prober in the other namespace was not discovered")
	}
	if peer.GetAddress() != far || peer.GetGrpcAddr() != net.JoinHostPort(far, "7400") || peer.GetBandwidthAddr() != net.JoinHostPort(far, "7402") {
		t.Fatalf("peer %v", peer)
	}
	if peer.GetRtt().AsDuration() <= 0 || peer.GetLossPercent() != 0 {
		t.Fatalf("RTT to peer not measured: %v", peer)
	}
	_, res, err := run(t, c, &proberv1.JobSpec{Kind: &proberv1.JobSpec_Bandwidth{Bandwidth: &proberv1.BandwidthSpec{
		Protocol: "tcp", Duration: durationpb.New(300 * time.Millisecond)}}})
	if err != nil || !res.GetSuccess() || res.GetBandwidth().GetBytes() == 0 {
		t.Fatalf("bandwidth to the discovered peer: %v %v", res, err)
	}
}
