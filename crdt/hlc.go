package crdt

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock value: physical milliseconds since the
// Unix epoch in the high 48 bits and a logical counter in the low 16 bits.
// Timestamps compare as plain unsigned integers. The zero Timestamp means
// "not stamped".
type Timestamp uint64

const (
	logicalBits = 16
	logicalMask = 1<<logicalBits - 1
	// MaxPhysical is the largest physical time a Timestamp can carry, in
	// milliseconds since the Unix epoch (about the year 10889).
	MaxPhysical = 1<<48 - 1
)

// NewTimestamp builds a Timestamp from physical milliseconds and a logical
// counter. Physical time outside [0, MaxPhysical] is clamped.
func NewTimestamp(physicalMs int64, logical uint16) Timestamp {
	return Timestamp(uint64(clampPhysical(physicalMs))<<logicalBits | uint64(logical))
}

// Physical returns the physical part, in milliseconds since the Unix epoch.
func (t Timestamp) Physical() int64 { return int64(t >> logicalBits) }

// Logical returns the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(t & logicalMask) }

// Time returns the physical part as a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.Physical()).UTC() }

// String returns the decimal form used in point records ("hlc").
func (t Timestamp) String() string { return strconv.FormatUint(uint64(t), 10) }

// ParseTimestamp parses the decimal form of a Timestamp. It accepts only
// digits (no sign, no spaces, no leading zeros), at most 20 of them, with a
// value that fits in 64 bits.
func ParseTimestamp(s string) (Timestamp, error) {
	if s == "" {
		return 0, errors.New("invalid hlc: empty")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("invalid hlc %q: leading zero", truncate(s, 32))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("invalid hlc %q: want a decimal integer", truncate(s, 32))
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid hlc %q: does not fit in 64 bits", truncate(s, 32))
	}
	return Timestamp(v), nil
}

func clampPhysical(ms int64) int64 {
	if ms < 0 {
		return 0
	}
	if ms > MaxPhysical {
		return MaxPhysical
	}
	return ms
}

// ErrClockSkew is matched (errors.Is) by the *SkewError that Clock.Update
// returns for a remote timestamp too far ahead of local physical time.
var ErrClockSkew = errors.New("remote clock too far ahead")

// SkewError reports a remote timestamp more than MaxOffset ahead of the local
// physical clock. The write that carried it must be refused: accepting it
// would let a device with a broken clock win every merge for as long as its
// clock stays ahead.
type SkewError struct {
	Remote    Timestamp
	Physical  int64 // local physical time, ms since the epoch
	MaxOffset time.Duration
}

func (e *SkewError) Error() string {
	ahead := time.Duration(e.Remote.Physical()-e.Physical) * time.Millisecond
	return fmt.Sprintf("remote clock too far ahead: hlc %s is %v ahead of local time %s (max offset %v)",
		e.Remote, ahead, time.UnixMilli(e.Physical).UTC().Format(time.RFC3339Nano), e.MaxOffset)
}

// Is makes errors.Is(err, ErrClockSkew) true.
func (e *SkewError) Is(target error) bool { return target == ErrClockSkew }

// DefaultMaxOffset is how far ahead of local physical time a remote timestamp
// may be before it is refused.
const DefaultMaxOffset = 60 * time.Second

// ClockConfig configures a Clock.
type ClockConfig struct {
	// Physical returns the current physical time. Required. Production
	// passes time.Now; tests pass a clock they drive.
	Physical func() time.Time
	// MaxOffset bounds how far ahead of Physical a remote timestamp may be.
	// Zero means DefaultMaxOffset. It is counted in whole milliseconds.
	MaxOffset time.Duration
}

// Clock is a hybrid logical clock. It is safe for concurrent use.
//
// Every timestamp it returns is greater than every timestamp it returned or
// accepted before, so local writes are ordered after everything the replica
// has seen. A device whose physical clock is far in the past still makes
// progress: any newer timestamp it accepts moves its clock forward.
//
// The skew check of Update compares remote timestamps with the local
// physical clock plus a correction (SetCorrection). A device without a
// real-time clock boots in 1970: until it has a correction it refuses
// timestamps from the present, and its own writes lose every merge. The link
// layer sets the correction from a trusted peer's time (the upstream it
// dialed) when the two clocks disagree by more than the offset, after which
// the device both accepts the present and stamps its writes with it.
type Clock struct {
	physical  func() time.Time
	maxOffset time.Duration
	offsetMs  int64

	mu         sync.Mutex
	last       Timestamp
	correction time.Duration
}

// NewClock returns a clock that has issued nothing yet.
func NewClock(cfg ClockConfig) (*Clock, error) {
	if cfg.Physical == nil {
		return nil, errors.New("hlc: ClockConfig.Physical is required")
	}
	if cfg.MaxOffset < 0 {
		return nil, fmt.Errorf("hlc: negative MaxOffset %v", cfg.MaxOffset)
	}
	if cfg.MaxOffset == 0 {
		cfg.MaxOffset = DefaultMaxOffset
	}
	return &Clock{physical: cfg.Physical, maxOffset: cfg.MaxOffset, offsetMs: cfg.MaxOffset.Milliseconds()}, nil
}

// MaxOffset returns the configured bound on remote timestamps.
func (c *Clock) MaxOffset() time.Duration { return c.maxOffset }

// Now returns a new timestamp for a local event:
// max(physical<<16, last+1).
//
// When the logical counter of the current millisecond is exhausted (65,536
// events in one millisecond) the carry moves the timestamp into the next
// millisecond, ahead of physical time; it never wraps. Only at the very end
// of the 64-bit range (year 10889) does Now stop advancing.
func (c *Clock) Now() Timestamp {
	pt := c.physicalTimestamp()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = tick(c.last, pt, 0)
	return c.last
}

// Update merges a timestamp received from another replica and returns a new
// timestamp for the receive event: max(physical<<16, last+1, remote+1). After
// Update, Now returns timestamps greater than remote.
//
// A remote timestamp whose physical part is more than MaxOffset ahead of
// local (corrected) physical time, or that sits at the very end of the last allowed
// millisecond, is refused with a *SkewError (matching ErrClockSkew) and the
// clock is left unchanged.
func (c *Clock) Update(remote Timestamp) (Timestamp, error) {
	pt := c.physicalTimestamp()
	if err := c.checkSkew(remote, pt); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = tick(c.last, pt, remote)
	return c.last, nil
}

// Check reports whether Update would accept remote, without changing the
// clock.
func (c *Clock) Check(remote Timestamp) error {
	return c.checkSkew(remote, c.physicalTimestamp())
}

// Observe raises the clock to at least t without a skew check and without
// ticking. It is for timestamps the replica already holds durably (on
// restart, the greatest timestamp in its store), which were checked when they
// were accepted.
func (c *Clock) Observe(t Timestamp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t > c.last {
		c.last = t
	}
}

// Last returns the greatest timestamp the clock has issued or observed.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// SetCorrection sets a duration added to the physical clock from now on:
// the difference between a trusted peer's time and ours, learnt during a
// link handshake. Zero removes the correction.
func (c *Clock) SetCorrection(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.correction = d
}

// Correction returns the duration set by SetCorrection.
func (c *Clock) Correction() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.correction
}

// Physical returns the corrected physical time, the reference for Now and
// for the skew check.
func (c *Clock) Physical() time.Time {
	c.mu.Lock()
	corr := c.correction
	c.mu.Unlock()
	return c.physical().Add(corr)
}

func (c *Clock) physicalTimestamp() Timestamp {
	return NewTimestamp(c.Physical().UnixMilli(), 0)
}

func (c *Clock) checkSkew(remote, pt Timestamp) error {
	if !SkewOK(remote, pt, c.offsetMs) {
		return &SkewError{Remote: remote, Physical: pt.Physical(), MaxOffset: c.maxOffset}
	}
	return nil
}

// SkewOK is the pure acceptance rule of Clock.Update: remote is accepted when
// remote < ((physical + maxOffsetMs) << 16 | 0xffff), that is, its physical
// part is at most maxOffsetMs ahead of physical's and remote+1 still fits in
// that millisecond. physical is a Timestamp whose logical part is ignored.
func SkewOK(remote, physical Timestamp, maxOffsetMs int64) bool {
	limitMs := physical.Physical() + maxOffsetMs
	if limitMs >= MaxPhysical {
		return remote < Timestamp(1<<64-1)
	}
	return remote < Timestamp(uint64(limitMs)<<logicalBits|logicalMask)
}

// tick is the pure HLC step shared by Now and Update:
// max(physical, last+1, remote+1), saturating at the top of the range.
// A zero remote means "no remote timestamp".
func tick(last, physical, remote Timestamp) Timestamp {
	next := physical
	if last+1 > next && last != 1<<64-1 {
		next = last + 1
	}
	if remote != 0 && remote+1 > next && remote != 1<<64-1 {
		next = remote + 1
	}
	if next < last {
		return last
	}
	return next
}
