//go:build lean

package transport

import (
	"errors"
	"net/http"
	"net/http/httptest"
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

// TestLeanWebsocketProxy: the lean build has no WebSocket listener, and
// its proxy answers every request 501, saying so.
func TestLeanWebsocketProxy(t *testing.T) {
	srvCheckLeaks(t)
	s := srvStart(t, ServerConfig{Websocket: true})
	if u := s.WebsocketURL(); u != "" {
		t.Fatalf("WebsocketURL() = %q in the lean build", u)
	}
	p, err := s.WebsocketProxy(WebsocketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/nats", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	p.ServeHTTP(w, r)
	if w.Code != http.StatusNotImplemented || !strings.Contains(w.Body.String(), "not in the lean build") {
		t.Errorf("/nats: %d %q, want 501 saying it is not in the lean build", w.Code, w.Body.String())
	}
}
