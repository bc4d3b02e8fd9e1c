package replica

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/rules"
	"github.com/siot-io/siot/store"
)

// Benchmarks of the rule engine (issue 17; BENCHMARKS.md, "rules").

// pacingZero is a rule's pacing point of 0 s. rules.FromPoints gives a
// rule without a pacing point rules.DefaultPacing (60 s), which would
// hold every second change of an instance back a minute; a pacing point
// written with value 0 gives 0, so every crossing is a transition at
// once.
var pacingZero = crdt.Point{Type: rules.TypePacing, Key: crdt.DefaultKey, Value: 0}

// msOf returns d in milliseconds, to the microsecond.
func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pctl returns the p-quantile (0 ≤ p ≤ 1) of sorted ds, by rank
// (the element at index ⌊p·n⌋, the last for p = 1); 0 for none.
func pctl(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(int(p*float64(len(ds))), len(ds)-1)]
}

// BenchmarkRuleLatency is the time from a point's change to the point a
// rule's action sets being in the store, on one cloud instance (real
// Badger in a temp dir, durable; real embedded NATS): a sensor under the
// root and, under the root, the rule "temp > 30" with action "set alarm 1"
// and clear action "set alarm 0", pacing 0 (pacingZero). Each op writes
// the sensor's temp across the threshold, 40 and 20 in turn, so every
// write is a transition, and waits, woken by the store's hub on every
// change, until the sensor's alarm holds 1 or 0 as the write asks. The
// clock starts just before Replica.Write (the durable write of the
// change is in the figure) and stops when the alarm is read back.
// Reported: p50-ms, p99-ms and max-ms of that, and write-p50-ms and
// write-p99-ms of the Write call alone. Run it with at least 1,000 ops
// (-benchtime 2000x).
func BenchmarkRuleLatency(b *testing.B) {
	n := startNode(b, "cloud", nodeOpts{tune: benchTuning})
	sensor := addNode(n, n.root, "sensor")
	n.write(valPt(sensor, "temp", 20))
	rule := addRule(n, n.root, []string{"temp > 30"}, []string{"set alarm 1"}, []string{"set alarm 0"}, pacingZero)
	waitFor(b, "the engine reads the rule", 10*time.Second, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	kick := n.rep.hub.register()
	defer n.rep.hub.unregister(kick)
	step := func(i int) (total, write time.Duration) {
		temp, alarm := 40.0, 1.0
		if i%2 == 1 {
			temp, alarm = 20, 0
		}
		t0 := time.Now()
		n.write(valPt(sensor, "temp", temp))
		write = time.Since(t0)
		waitApplied(b, n, kick, sensor, "alarm", alarm)
		return time.Since(t0), write
	}
	// The engine counts a transition after its write returns, which may
	// be after the action's point is read back here; once it has read
	// its own write from the feed, the count is settled.
	idle := func() {
		waitFor(b, "the engine idle", 10*time.Second, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	}
	// Warm up: the instance exists and both actions have run.
	for i := range 20 {
		step(i)
	}
	idle()
	active0, cleared0 := n.rep.metrics.ruleActive.Load(), n.rep.metrics.ruleCleared.Load()
	lat := make([]time.Duration, 0, b.N)
	wr := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		total, write := step(i)
		lat = append(lat, total)
		wr = append(wr, write)
	}
	b.StopTimer()
	idle()
	if got := int(n.rep.metrics.ruleActive.Load()-active0) + int(n.rep.metrics.ruleCleared.Load()-cleared0); got != b.N {
		b.Fatalf("%d transitions for %d crossings", got, b.N)
	}
	if s := ruleState(n, rule, sensor); s != float64(b.N%2) {
		b.Fatalf("rule state %v after %d crossings", s, b.N)
	}
	slices.Sort(lat)
	slices.Sort(wr)
	b.ReportMetric(msOf(pctl(lat, 0.5)), "p50-ms")
	b.ReportMetric(msOf(pctl(lat, 0.99)), "p99-ms")
	b.ReportMetric(msOf(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(msOf(pctl(wr, 0.5)), "write-p50-ms")
	b.ReportMetric(msOf(pctl(wr, 0.99)), "write-p99-ms")
}

// The fleet: fleetSites sites under the root, each with fleetSensors
// sensors writing "temp", and fleetRulesPerSite rules under each site,
// rule k reading "temp > 30+10k" on every sensor of its site and setting
// the sensor's alarm.k to 1, and to 0 when it clears, pacing 0.
const (
	fleetSites        = 1000
	fleetSensors      = 10
	fleetRulesPerSite = 10
	fleetBatch        = 100 // points a Write
)

// ruleFleet is the tree the fleet benchmark drives.
type ruleFleet struct {
	n       *node
	sites   []uuid.UUID
	sensors []uuid.UUID // site i's are [i*fleetSensors, (i+1)*fleetSensors)
	rules   int
}

// buildRuleFleet writes the sites and sensors (each with temp 20) and,
// with withRules, the rules, in batches of 1,000 points, and waits until
// the engine has read them all.
func buildRuleFleet(b *testing.B, n *node, rng *rand.Rand, withRules bool) *ruleFleet {
	b.Helper()
	f := &ruleFleet{n: n}
	seeded := func() uuid.UUID {
		var id uuid.UUID
		for i := 0; i < len(id); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				id[i+j] = byte(v >> (8 * j))
			}
		}
		id[6], id[8] = id[6]&0x0f|0x40, id[8]&0x3f|0x80 // version 4, RFC 4122
		return id
	}
	var pts []crdt.Point
	flush := func(force bool) {
		if len(pts) >= 1000 || (force && len(pts) > 0) {
			n.write(pts...)
			pts = pts[:0]
		}
	}
	for range fleetSites {
		site := seeded()
		f.sites = append(f.sites, site)
		pts = append(pts, edgePt(n.root, site), textPt(site, crdt.TypeNodeType, "", "site"))
		for range fleetSensors {
			s := seeded()
			f.sensors = append(f.sensors, s)
			pts = append(pts, edgePt(site, s), textPt(s, crdt.TypeNodeType, "", "sensor"), valPt(s, "temp", 20))
		}
		flush(false)
	}
	if withRules {
		for _, site := range f.sites {
			for k := range fleetRulesPerSite {
				id := seeded()
				key := strconv.Itoa(k)
				p := pacingZero
				p.Node = id
				pts = append(pts, edgePt(site, id), textPt(id, crdt.TypeNodeType, "", rules.NodeTypeRule),
					textPt(id, "description", "", "fleet rule "+key),
					textPt(id, rules.TypeCondition, "1", fmt.Sprintf("temp > %d", 30+10*k)),
					textPt(id, rules.TypeAction, "1", "set alarm."+key+" 1"),
					textPt(id, rules.TypeActionClear, "1", "set alarm."+key+" 0"), p)
				f.rules++
			}
			flush(false)
		}
	}
	flush(true)
	waitFor(b, "the engine reads the tree", 5*time.Minute, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	return f
}

// settle waits until the process has used less than 5% of a core over
// 200 ms (Badger's compactions after the build are done), at most 20 s,
// and returns the last share seen.
func settle() float64 {
	var share float64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		c0, t0 := cpuTime(), time.Now()
		time.Sleep(200 * time.Millisecond)
		share = (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
		if share < 0.05 {
			break
		}
	}
	return share
}

// fleetWrite is one batch the load wrote: when Write was called and
// returned, and the change numbers of its points.
type fleetWrite struct {
	start, done time.Time
	last        uint64
}

// fleetTrans is one transition the observer read: rule state key
// (the subject), its change number, when it was read.
type fleetTrans struct {
	subject uuid.UUID
	seq     uint64
	at      time.Time
}

// fleetResult is what one load phase measured.
type fleetResult struct {
	changes   int
	wall      time.Duration // the load's schedule, until the last batch was written
	span      time.Duration // from the first write until the engine had read the last
	cpu       time.Duration // process CPU over span
	lag       []time.Duration
	seqLagMax uint64
	trans     []time.Duration
	expected  int // transitions the values written call for
	observed  int
	drain     time.Duration // from the last write until the engine had read it
	settled   float64
}

// driveRuleFleet writes rate changes a second to the fleet's sensors
// for secs seconds: a batch of fleetBatch points every fleetBatch/rate
// seconds on a fixed schedule (a batch written late is followed at once
// by the ones due; none is dropped), each sensor in turn, so each is
// written once every len(sensors)/rate seconds. Alongside it, a sampler
// reads the engine's feed position every millisecond, and an observer,
// woken by the hub, reads the rule state changes from the feed.
//
// One write in excursion sends a sensor in its normal band (20 to 25) to
// 35 + U[0, 100), above some of its site's thresholds (5.5 of the 10 on
// average); its next write brings it back.
func driveRuleFleet(b *testing.B, f *ruleFleet, rng *rand.Rand, rate, secs, excursion int) fleetResult {
	b.Helper()
	n := f.n
	var r fleetResult
	r.settled = settle()

	type sample struct {
		at   time.Time
		seen uint64
	}
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		samples = make([]sample, 0, secs*1200)
		trans   []fleetTrans
	)
	wg.Add(2)
	go func() { // the sampler
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				samples = append(samples, sample{time.Now(), n.rep.rules.seen()})
			}
		}
	}()
	kick := n.rep.hub.register()
	obsPos := n.st.LastSeq()
	observe := func() {
		err := n.st.FeedWhere(obsPos, func(c *store.Change) (bool, error) {
			obsPos = c.Seq
			return c.Point.Type == rules.TypeState, nil
		}, func(c *store.Change) error {
			s, err := uuid.Parse(c.Point.Key)
			if err != nil {
				return err
			}
			trans = append(trans, fleetTrans{s, c.Seq, time.Now()})
			return nil
		})
		if err != nil {
			b.Error(err)
		}
	}
	go func() { // the observer
		defer wg.Done()
		defer n.rep.hub.unregister(kick)
		for {
			select {
			case <-stop:
				observe()
				return
			case <-kick:
				observe()
			}
		}
	}()

	// The values: each sensor's current one, and the writes of each
	// sensor (change number, when its batch's Write was called).
	type sensorWrite struct {
		seq uint64
		at  time.Time
	}
	vals := make([]float64, len(f.sensors))
	for i := range vals {
		vals[i] = 20
	}
	hist := make([][]sensorWrite, len(f.sensors))
	crossed := func(a, v float64) int {
		c := 0
		for k := range fleetRulesPerSite {
			if l := float64(30 + 10*k); (a > l) != (v > l) {
				c++
			}
		}
		return c
	}
	interval := time.Duration(fleetBatch) * time.Second / time.Duration(rate)
	batches := rate * secs / fleetBatch
	writes := make([]fleetWrite, 0, batches)
	pts := make([]crdt.Point, fleetBatch)
	next := 0 // the next sensor
	cpu0, t0 := cpuTime(), time.Now()
	for i := range batches {
		time.Sleep(time.Until(t0.Add(time.Duration(i) * interval)))
		idx := make([]int, fleetBatch)
		for j := range pts {
			s := next
			next = (next + 1) % len(f.sensors)
			v := 20 + 5*rng.Float64()
			if vals[s] <= 30 && rng.IntN(excursion) == 0 {
				v = 35 + 100*rng.Float64()
			}
			r.expected += crossed(vals[s], v)
			vals[s] = v
			idx[j] = s
			pts[j] = valPt(f.sensors[s], "temp", v)
		}
		w := fleetWrite{start: time.Now()}
		res, err := n.rep.Write(pts)
		if err != nil {
			b.Fatal(err)
		}
		w.done = time.Now()
		if len(res.Changes) != fleetBatch {
			b.Fatalf("a batch of %d points made %d changes", fleetBatch, len(res.Changes))
		}
		w.last = res.FirstSeq + uint64(len(res.Changes)) - 1
		for j, s := range idx {
			hist[s] = append(hist[s], sensorWrite{res.FirstSeq + uint64(j), w.start})
		}
		writes = append(writes, w)
		r.changes += fleetBatch
	}
	r.wall = time.Since(t0)
	last := writes[len(writes)-1]
	waitFor(b, "the engine reads the last change", 5*time.Minute, func() bool { return n.rep.rules.seen() >= last.last })
	r.drain = time.Since(last.done)
	r.span, r.cpu = time.Since(t0), cpuTime()-cpu0
	// The transitions the last changes call for are written after the
	// engine read them: wait for the feed to be still.
	waitFor(b, "the engine is idle", time.Minute, func() bool { return n.rep.rules.seen() >= n.st.LastSeq() })
	close(stop)
	wg.Wait()

	// Staleness: for each batch, from its Write's return to the first
	// sample at which the engine had read through its last change.
	// Both the batches and the samples are in time order, and the
	// position only grows.
	k := 0
	for _, w := range writes {
		for k < len(samples) && (samples[k].seen < w.last || samples[k].at.Before(w.done)) {
			k++
		}
		if k == len(samples) {
			r.lag = append(r.lag, r.drain) // read after the sampler stopped
			continue
		}
		r.lag = append(r.lag, samples[k].at.Sub(w.done))
	}
	// The largest number of changes the engine was behind, sampled.
	j := 0
	for _, s := range samples {
		for j < len(writes) && !writes[j].done.After(s.at) {
			j++
		}
		if j > 0 && writes[j-1].last > s.seen {
			r.seqLagMax = max(r.seqLagMax, writes[j-1].last-s.seen)
		}
	}
	// Transition latency: from the Write call of the change that moved
	// the instance (the subject's last write before the state change)
	// to the observer reading the state change.
	sensorIdx := make(map[uuid.UUID]int, len(f.sensors))
	for i, s := range f.sensors {
		sensorIdx[s] = i
	}
	for _, t := range trans {
		i, ok := sensorIdx[t.subject]
		if !ok {
			continue
		}
		h := hist[i]
		at, found := slices.BinarySearchFunc(h, t.seq, func(w sensorWrite, seq uint64) int {
			return cmpU64(w.seq, seq)
		})
		if found || at == 0 {
			continue // before the load
		}
		r.trans = append(r.trans, t.at.Sub(h[at-1].at))
		r.observed++
	}
	slices.Sort(r.lag)
	slices.Sort(r.trans)
	return r
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fleetEnv reads a positive integer from the environment, or def.
func fleetEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	x, err := strconv.Atoi(v)
	if err != nil || x <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return x
}

// BenchmarkRuleFleet is a cloud with 10,000 rules under a load of
// 10,000 point changes a second: 1,000 sites under the root, 10 sensors
// each, 10 rules each (ruleFleet), and every sensor's temp written once a
// second through Replica.Write in batches of 100 every 10 ms
// (driveRuleFleet) for SIOT_RULES_SECONDS (10) at SIOT_RULES_RATE
// (10,000) changes a second; one write in SIOT_RULES_EXCURSION (500)
// takes a sensor above some thresholds until its next write, which at
// the defaults calls for about 220 transitions a second (half of them
// activations). One op is two phases, each on a fresh
// instance built before its clock starts: the baseline, the same tree and
// load without rules, then the rules. Run it with -benchtime 1x.
//
// Reported, for the rules phase (base- for the baseline):
//
//   - changes/s: the rate the writes sustained (the schedule's changes
//     over the time until the last batch was written);
//   - cpu-%2core, cpu-us/change: the process's CPU time (user + sys)
//     from the first write until the engine had read the last change,
//     as a share of the machine's 2 cores and per change;
//     rule-cpu-us/change is the difference between the phases and
//     cpu-ratio their quotient;
//   - lag-p99-ms, lag-max-ms: for each batch, from its Write's return
//     until the engine's feed position (ruleEngine.seen, set after it
//     has judged what it read) was through its last change, sampled
//     every millisecond; seq-lag-max: the most changes it was behind;
//   - trans-p99-ms, trans-max-ms, transitions: for each transition,
//     from the Write call of the change that moved the instance until an
//     observer woken by the hub read the rule's state change in the feed;
//   - missed: transitions the values written call for minus those
//     written (nonzero when the engine skipped a change it was too far
//     behind to read before it was overwritten, or lost one).
func BenchmarkRuleFleet(b *testing.B) {
	rate := fleetEnv(b, "SIOT_RULES_RATE", 10_000)
	secs := fleetEnv(b, "SIOT_RULES_SECONDS", 10)
	excursion := fleetEnv(b, "SIOT_RULES_EXCURSION", 500)
	for range b.N {
		seed := uint64(time.Now().UnixNano())
		b.Logf("seed %d", seed)
		var res [2]fleetResult
		for phase, withRules := range []bool{false, true} {
			// The same IDs and the same values in both phases.
			ids, vals := rand.New(rand.NewPCG(seed, 17)), rand.New(rand.NewPCG(seed, 18))
			n := startNode(b, "cloud", nodeOpts{tune: benchTuning})
			t0 := time.Now()
			f := buildRuleFleet(b, n, ids, withRules)
			b.Logf("rules=%v: %d sites, %d sensors, %d rules built in %v", withRules, len(f.sites), len(f.sensors), f.rules, time.Since(t0).Round(time.Millisecond))
			res[phase] = driveRuleFleet(b, f, vals, rate, secs, excursion)
			r := res[phase]
			b.Logf("rules=%v: %d changes in %v (span %v, drain %v), cpu %v, idle before %.1f%% of a core; transitions %d written, %d called for; lag p50 %v p99 %v max %v",
				withRules, r.changes, r.wall.Round(time.Millisecond), r.span.Round(time.Millisecond), r.drain.Round(time.Microsecond),
				r.cpu.Round(time.Millisecond), 100*r.settled, r.observed, r.expected,
				pctl(r.lag, 0.5), pctl(r.lag, 0.99), pctl(r.lag, 1))
			n.stop()
		}
		base, rr := res[0], res[1]
		perChange := func(r fleetResult) float64 { return float64(r.cpu.Microseconds()) / float64(r.changes) }
		b.ReportMetric(float64(rr.changes)/rr.wall.Seconds(), "changes/s")
		b.ReportMetric(float64(base.changes)/base.wall.Seconds(), "base-changes/s")
		b.ReportMetric(100*rr.cpu.Seconds()/rr.span.Seconds()/2, "cpu-%2core")
		b.ReportMetric(100*base.cpu.Seconds()/base.span.Seconds()/2, "base-cpu-%2core")
		b.ReportMetric(perChange(rr), "cpu-us/change")
		b.ReportMetric(perChange(base), "base-cpu-us/change")
		b.ReportMetric(perChange(rr)-perChange(base), "rule-cpu-us/change")
		b.ReportMetric(perChange(rr)/perChange(base), "cpu-ratio")
		b.ReportMetric(msOf(pctl(rr.lag, 0.99)), "lag-p99-ms")
		b.ReportMetric(msOf(pctl(rr.lag, 1)), "lag-max-ms")
		b.ReportMetric(msOf(pctl(base.lag, 0.99)), "base-lag-p99-ms")
		b.ReportMetric(float64(rr.seqLagMax), "seq-lag-max")
		b.ReportMetric(msOf(pctl(rr.trans, 0.5)), "trans-p50-ms")
		b.ReportMetric(msOf(pctl(rr.trans, 0.99)), "trans-p99-ms")
		b.ReportMetric(msOf(pctl(rr.trans, 1)), "trans-max-ms")
		b.ReportMetric(float64(rr.observed), "transitions")
		b.ReportMetric(float64(rr.expected-rr.observed), "missed")
	}
}
