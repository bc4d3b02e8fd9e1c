package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// mdLink finds a Markdown link's target: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// mdName finds the name of a Markdown file in prose or code.
	mdName = regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
	// repoPath finds a path into one of the repository's folders, such as
	// store/doc.go or testdata/crdt/.
	repoPath = regexp.MustCompile("(?:^|[\\s`(\"'])((?:crdt|store|transport|replica|cmd|testdata|docs|scripts)/[A-Za-z0-9_./-]*)")
)

// TestDocsCiteExistingFiles checks that the documentation and the code's
// comments cite only files that the repository has: every Markdown link
// to a local file, every Markdown file named and every path into one of the
// repository's folders, in README.md, BENCHMARKS.md, docs/, testdata/ and
// every Go file.
func TestDocsCiteExistingFiles(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "bin" || name == "node_modules" || name == "rapid" || name == "siot-data") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".md") || strings.HasSuffix(name, ".go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	exists := func(from, target string) bool {
		target = strings.TrimSuffix(strings.SplitN(target, "#", 2)[0], ".")
		if target == "" {
			return true
		}
		for _, base := range []string{filepath.Dir(from), root} {
			if _, err := os.Stat(filepath.Join(base, target)); err == nil {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		var cites []string
		if strings.HasSuffix(f, ".md") {
			for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
				if !strings.Contains(m[1], "://") && !strings.HasPrefix(m[1], "#") && !strings.HasPrefix(m[1], "mailto:") {
					cites = append(cites, m[1])
				}
			}
		}
		cites = append(cites, mdName.FindAllString(string(b), -1)...)
		for _, m := range repoPath.FindAllStringSubmatch(string(b), -1) {
			cites = append(cites, m[1])
		}
		for _, c := range cites {
			if strings.ContainsAny(c, "*$<>") {
				continue // a pattern, not a file
			}
			checked++
			if !exists(f, c) {
				t.Errorf("%s cites %s, which the repository does not have", rel, c)
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d citations checked: the patterns no longer match the docs", checked)
	}
}
