package notify

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: Send must
// not, and neither may the test servers.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait in these tests.
const wait = 10 * time.Second

// testMessage returns a firing notification with fixed IDs (no randomness:
// every run sends the same bytes).
func testMessage() *Message {
	return &Message{
		ID:       "n-0f1e2d3c4b5a6978",
		Status:   "firing",
		Rule:     uuid.MustParse("11111111-1111-4111-8111-111111111111"),
		RuleName: "Boiler too hot",
		Node:     uuid.MustParse("22222222-2222-4222-8222-222222222222"),
		NodeName: "Boiler 1",
		Text:     "Boiler 1 is at 92.5 °C, above 90 °C",
		Time:     time.Date(2024, 5, 1, 12, 34, 56, 789_000_000, time.FixedZone("CEST", 2*3600)),
		Instance: uuid.MustParse("33333333-3333-4333-8333-333333333333"),
		Values: []Value{
			{Node: uuid.MustParse("44444444-4444-4444-8444-444444444444"), Type: "temp", Key: "0", Value: 92.5},
			{Node: uuid.MustParse("44444444-4444-4444-8444-444444444444"), Type: "mode", Key: "0", Value: 1, Text: "auto"},
		},
	}
}
