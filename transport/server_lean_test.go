//go:build lean

package transport

import (
	"errors"
	"strings"
	"testing"
)

// TestLeanRefusesCluster: the lean build has no cluster and says so at
// start, for a route listener and for routes alone.
func TestLeanRefusesCluster(t *testing.T) {
	srvCheckLeaks(t)
	for _, c := range []ClusterConfig{
		{Listen: "127.0.0.1:0", Secret: strings.Repeat("s", MinClusterSecret)},
		{Routes: []string{"nats://127.0.0.1:4248"}},
	} {
		s, err := StartServer(ServerConfig{Listen: "127.0.0.1:0", Cluster: c})
		if err == nil {
			s.Shutdown()
			t.Fatalf("StartServer with cluster %+v started", c)
		}
		if !errors.Is(err, ErrLeanCluster) || !strings.Contains(err.Error(), "not in the lean build") {
			t.Errorf("StartServer with cluster %+v: %v, want ErrLeanCluster", c, err)
		}
	}
}
