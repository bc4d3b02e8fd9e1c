package main

import (
	"math"
	"testing"
)

// TestFormatValue: whole numbers print in full (times in milliseconds),
// others in the shortest exact form.
func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{21.5, "21.5"}, {0, "0"}, {-3, "-3"}, {1e6, "1000000"}, {1796569297942, "1796569297942"},
		{1 << 53, "9.007199254740992e+15"}, {1e-7, "1e-07"}, {0.1, "0.1"}, {math.Inf(1), "+Inf"},
	} {
		if got := formatValue(c.v); got != c.want {
			t.Errorf("formatValue(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
