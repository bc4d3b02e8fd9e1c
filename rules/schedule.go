package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Schedule is the time a schedule condition holds: on some weekdays,
// from a time of day to another, in a time zone. A range that ends before
// it starts ends the next day; it belongs to the weekday it starts on.
type Schedule struct {
	Days       [7]bool // by time.Weekday
	Start, End int     // minutes after midnight; Start == End: all day
	Zone       *time.Location
	ZoneName   string
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseSchedule parses the words after "schedule": DAYS HH:MM-HH:MM
// [ZONE].
func ParseSchedule(toks []string) (Schedule, error) {
	var s Schedule
	if len(toks) < 2 || len(toks) > 3 {
		return s, fmt.Errorf("want schedule DAYS HH:MM-HH:MM [ZONE], e.g. schedule Mon-Fri 08:00-18:00 Europe/Berlin")
	}
	if err := s.parseDays(toks[0]); err != nil {
		return s, err
	}
	from, to, ok := strings.Cut(toks[1], "-")
	if !ok {
		return s, fmt.Errorf("times %q: want HH:MM-HH:MM", toks[1])
	}
	var err error
	if s.Start, err = clock(from); err != nil {
		return s, err
	}
	if s.End, err = clock(to); err != nil {
		return s, err
	}
	s.Zone, s.ZoneName = time.UTC, "UTC"
	if len(toks) == 3 {
		loc, err := time.LoadLocation(toks[2])
		if err != nil || toks[2] == "" || toks[2] == "Local" {
			return s, fmt.Errorf("time zone %q: unknown (want an IANA name like Europe/Berlin)", toks[2])
		}
		s.Zone, s.ZoneName = loc, toks[2]
	}
	return s, nil
}

func (s *Schedule) parseDays(t string) error {
	if strings.EqualFold(t, "daily") || t == "*" {
		s.Days = [7]bool{true, true, true, true, true, true, true}
		return nil
	}
	for part := range strings.SplitSeq(strings.ToLower(t), ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok := weekdays[a]
		if !ok {
			return fmt.Errorf("day %q: want Mon Tue Wed Thu Fri Sat Sun, ranges like Mon-Fri, or daily", a)
		}
		to := from
		if isRange {
			if to, ok = weekdays[b]; !ok {
				return fmt.Errorf("day %q: want Mon Tue Wed Thu Fri Sat Sun", b)
			}
		}
		for d := from; ; d = (d + 1) % 7 {
			s.Days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("time %q: want HH:MM from 00:00 to 24:00", s)
	}
	return hh*60 + mm, nil
}

// In reports whether t is inside the schedule.
func (s *Schedule) In(t time.Time) bool {
	if s.Zone == nil {
		return false
	}
	lt := t.In(s.Zone)
	min := lt.Hour()*60 + lt.Minute()
	day := lt.Weekday()
	switch {
	case s.Start == s.End:
		return s.Days[day]
	case s.Start < s.End:
		return s.Days[day] && min >= s.Start && min < s.End
	default: // over midnight: today's range, or the one that began yesterday
		return s.Days[day] && min >= s.Start || s.Days[(day+6)%7] && min < s.End
	}
}

// Next returns the first instant after t at which In changes, or the
// zero time when it never does (every day, all day).
func (s *Schedule) Next(t time.Time) time.Time {
	if s.Zone == nil {
		return time.Time{}
	}
	now := s.In(t)
	// In reads the wall clock, so it changes only where the wall clock
	// reads Start, End or midnight (an all-day range changes at
	// midnight), or where the zone's offset jumps. Those instants of the
	// next fifteen days are the candidates (a weekly range the clock
	// skips comes again within two weeks); In is constant between two of
	// them, so the first candidate where it differs from now is the
	// answer. (This used to look at Start and End of nine days only, each
	// the one instant time.Date picks: an all-day range not at 00:00, a
	// Start in the hour a daylight saving change skips, the first of two
	// instants a change back repeats, and a weekly range after a skipped
	// one were missed.)
	const days = 15
	limit := t.Add(days * 24 * time.Hour)
	var jumps []time.Time
	offsets := []int{}
	for at := t; ; {
		lt := at.In(s.Zone)
		if _, off := lt.Zone(); !slices.Contains(offsets, off) {
			offsets = append(offsets, off)
		}
		_, end := lt.ZoneBounds()
		if end.IsZero() || !end.After(at) || end.After(limit) {
			break
		}
		jumps = append(jumps, end)
		at = end
	}
	var best time.Time
	try := func(at time.Time) {
		if at.After(t) && (best.IsZero() || at.Before(best)) && s.In(at) != now {
			best = at
		}
	}
	for _, at := range jumps {
		try(at)
	}
	lt := t.In(s.Zone)
	for d := -1; d <= days; d++ {
		day := time.Date(lt.Year(), lt.Month(), lt.Day()+d, 0, 0, 0, 0, time.UTC)
		for _, m := range []int{0, s.Start, s.End} {
			wall := day.Add(time.Duration(m) * time.Minute)
			// Each instant whose wall clock reads wall: one per offset
			// the zone has then (none in a skipped hour, two in a
			// repeated one).
			for _, off := range offsets {
				at := wall.Add(-time.Duration(off) * time.Second)
				if _, o := at.In(s.Zone).Zone(); o == off {
					try(at)
				}
			}
		}
	}
	if best.IsZero() {
		return best
	}
	return best.In(s.Zone)
}

// String writes the schedule back as ParseSchedule reads it.
func (s *Schedule) String() string {
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", s.daysString(), s.Start/60, s.Start%60, s.End/60, s.End%60, s.ZoneName)
}

func (s *Schedule) daysString() string {
	var parts []string
	names := []string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	for d, on := range s.Days {
		if on {
			parts = append(parts, names[d])
		}
	}
	if len(parts) == 7 {
		return "daily"
	}
	return strings.Join(parts, ",")
}
