package main

import (
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionOf: a stamped version (make release) wins over the module
// version, which wins over "devel"; the revision comes from the VCS
// settings either way, and lean is reported as given.
func TestVersionOf(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	for _, c := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		lean    bool
		want    versionInfo
	}{
		{"no build info", "", nil, false, versionInfo{version: "devel"}},
		{"stamped, no build info", "v1.2.3", nil, true, versionInfo{version: "v1.2.3", lean: true}},
		{"devel module", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs}, false,
			versionInfo{version: "devel", revision: "0123456789ab-dirty"}},
		{"module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, false, versionInfo{version: "v0.4.0"}},
		{"stamped wins", " v0.5.0-3-gabc-dirty\n", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}, Settings: vcs}, true,
			versionInfo{version: "v0.5.0-3-gabc-dirty", revision: "0123456789ab-dirty", lean: true}},
		{"blank stamp ignored", "  ", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, false, versionInfo{version: "v0.4.0"}},
	} {
		got := versionOf(c.stamped, c.bi, c.lean)
		c.want.goVersion = got.goVersion
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	if s := (versionInfo{version: "v1", goVersion: "go1.26.0", lean: true}).String(); s != "v1 go1.26.0 lean" {
		t.Errorf("String: %q", s)
	}
}

// TestVersionJSONSaysLean: siot version --json carries "lean", false in
// this (default) build. TestLeanEdgeSyncsWithCloud checks a lean binary
// built with a stamped version.
func TestVersionJSONSaysLean(t *testing.T) {
	out, _, err := run(t, "version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version string
		Lean    *bool
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Lean == nil || *v.Lean != leanBuild || v.Version == "" {
		t.Fatalf("version --json: %q %v", out, err)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("version --json: not one line: %q", out)
	}
}
