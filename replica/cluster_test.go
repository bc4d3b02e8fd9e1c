//go:build !lean

// A cluster of clouds needs the full build: the lean one refuses it
// (transport.TestLeanRefusesCluster).

package replica

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/transport"
)

// cloudCluster is three clouds whose servers form one NATS cluster and
// whose replicas are peered (b and c dial a, c dials b), so that any two
// stay linked when the third is down; edges link to "a,b,c".
type cloudCluster struct {
	clouds []*node
	peer   *transport.Creds
}

func startCloudCluster(t *testing.T) *cloudCluster {
	t.Helper()
	a := startNode(t, "cloud-a", nodeOpts{cluster: []string{}})
	peer, err := transport.NewKeyCreds(transport.KindKey, a.root)
	if err != nil {
		t.Fatal(err)
	}
	a.write(crdt.Point{Node: a.root, Type: crdt.TypeAuthKey, Key: mustPub(t, peer), Value: 1, Text: "peer"})
	b := startNode(t, "cloud-b", nodeOpts{root: a.root, peers: []string{a.url()}, peerCreds: peer, cluster: []string{a.routeURL()}})
	b.waitInSync(a.url())
	c := startNode(t, "cloud-c", nodeOpts{root: a.root, peers: []string{a.url(), b.url()}, peerCreds: peer, cluster: []string{a.routeURL()}})
	c.waitInSync(a.url())
	c.waitInSync(b.url())
	waitFor(t, "a full mesh of routes", 10*time.Second, func() bool {
		return a.srv.Routes() > 0 && b.srv.Routes() > 0 && c.srv.Routes() > 0
	})
	return &cloudCluster{clouds: []*node{a, b, c}, peer: peer}
}

// urls is the server list an edge of the cluster dials.
func (cc *cloudCluster) urls() string {
	var us []string
	for _, c := range cc.clouds {
		us = append(us, c.url())
	}
	return strings.Join(us, ",")
}

// servedBy returns the cloud whose instance the edge's one link is with,
// or nil when it is down.
func (cc *cloudCluster) servedBy(e *node, url string) *node {
	l := e.link(url)
	if !l.Connected || !l.InSync {
		return nil
	}
	for _, c := range cc.clouds {
		if c.rep != nil && c.st.Instance().String() == l.Remote {
			return c
		}
	}
	return nil
}

// TestClusterMemberKilledEdgesMove runs the scale-out topology: three
// clouds in a NATS cluster, peered; edges dial the list of all three and
// spread over them. One cloud is killed mid-run while every edge writes:
// its edges move to the other two, each edge is served by one cloud at a
// time, and every point written anywhere reaches the two that are up —
// what the stopped cloud had acknowledged included. When it comes back it
// catches up.
func TestClusterMemberKilledEdgesMove(t *testing.T) {
	cc := startCloudCluster(t)
	a := cc.clouds[0]
	const nEdges = 9
	url := cc.urls()
	var edges []*node
	for i := range nEdges {
		dev := uuid.New()
		creds := a.deviceCreds(dev)
		e := startNode(t, fmt.Sprintf("edge%d", i), nodeOpts{root: dev, upstreams: []string{url}, upstreamCreds: creds,
			tune: func(c *Config) { c.AckTimeout = 10 * time.Second }})
		edges = append(edges, e)
	}
	served := map[*node]int{}
	waitFor(t, "every edge served", 30*time.Second, func() bool {
		clear(served)
		for _, e := range edges {
			s := cc.servedBy(e, url)
			if s == nil {
				return false
			}
			served[s]++
		}
		return true
	})
	if len(served) < 2 {
		t.Fatalf("nine edges all went to one cloud: %v", served)
	}
	for _, cl := range cc.clouds {
		t.Logf("%s serves %d edges", cl.name, served[cl])
	}
	// The cloud that serves the most edges is killed; the other two
	// stay peered whichever it is.
	victim := a
	for _, cl := range cc.clouds {
		if served[cl] > served[victim] {
			victim = cl
		}
	}
	var up []*node
	for _, cl := range cc.clouds {
		if cl != victim {
			up = append(up, cl)
		}
	}

	// Each edge writes a point 50 times a second to a sensor of its own,
	// and a cloud that stays up writes a setpoint to each after the kill.
	sensors := make([]uuid.UUID, len(edges))
	for i, e := range edges {
		sensors[i] = uuid.New()
		e.write(edgePt(e.root, sensors[i]), valPt(sensors[i], "temp", 0))
	}
	var written atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, e := range edges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for v := 1; ; v++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := e.rep.Write([]crdt.Point{{Node: sensors[i], Type: "reading", Key: fmt.Sprint(v % 50), Value: float64(v)}}); err != nil {
					t.Errorf("%s: %v", e.name, err)
					return
				}
				written.Add(1)
			}
		}()
	}
	waitFor(t, "writes under way", 10*time.Second, func() bool { return written.Load() > 200 })
	victimID := victim.st.Instance().String()
	victim.kill()
	killedAt := time.Now()
	waitFor(t, "writes after the stop", 10*time.Second, func() bool { return written.Load() > 600 })
	for i := range edges {
		up[0].write(valPt(sensors[i], "setpoint", 7))
	}
	stop()
	wg.Wait()

	// Every edge is served by a cloud that is up, and both hold
	// everything every edge wrote; every edge holds the setpoint.
	waitExplained(t, 20*time.Second, func() bool {
		for _, e := range edges {
			if s := cc.servedBy(e, url); s == nil || s == victim {
				return false
			}
		}
		return true
	}, func() string {
		var sb strings.Builder
		for _, e := range edges {
			l := e.link(url)
			fmt.Fprintf(&sb, "%s: connected %v in sync %v remote %s err %s %s\n", e.name, l.Connected, l.InSync, l.Remote, l.LastError, e.rep.dialers[0].debugState())
		}
		return "edges not back in sync with the clouds that are up:\n" + sb.String()
	})
	t.Logf("every edge back in sync %v after the stop", time.Since(killedAt).Round(time.Millisecond))
	for i, e := range edges {
		if l := e.link(url); l.Remote == victimID {
			t.Fatalf("%s still names the stopped cloud", e.name)
		}
		for _, cl := range up {
			waitExplained(t, 30*time.Second, func() bool {
				return equalDumps(e.dump(e.root), cl.dump(e.root))
			}, func() string {
				return fmt.Sprintf("%s and %s differ on the edge's subtree:\n%s\n%s", e.name, cl.name,
					strings.Join(e.dump(e.root), "\n"), strings.Join(cl.dump(e.root), "\n"))
			})
		}
		e.waitValue(sensors[i], "setpoint", 7)
	}

	// Each edge holds one session in all the clouds that are up.
	for _, e := range edges {
		n := 0
		for _, cl := range up {
			for _, s := range cl.rep.Status().Accepted {
				if s.Connected && s.Remote == e.st.Instance().String() {
					n++
				}
			}
		}
		if n != 1 {
			t.Fatalf("%s has %d sessions in the clouds that are up, want 1", e.name, n)
		}
	}

	// The killed cloud comes back and catches up on what it missed.
	victim.start()
	waitFor(t, victim.name+" converged with the others", 30*time.Second, func() bool {
		dv := victim.dump(uuid.Nil)
		return equalDumps(dv, up[0].dump(uuid.Nil)) && equalDumps(dv, up[1].dump(uuid.Nil))
	})
}

// debugState describes the link's live session for a failure message.
func (d *dialLink) debugState() string {
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s == nil {
		return "no session"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("sendIdle %v remoteIdle %v repairEqual %v pending %d have %d last %+v diff %+v", s.sendIdle, s.remoteIdle, s.repairEqual, s.pending, s.have, s.lastRepair, s.lastDiff)
}
