package rules

import "testing"

// TestParseActionNotifyMessage: a notify action's message is its text
// without the quotes around it, with its spacing when quoted whole.
func TestParseActionNotifyMessage(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{`notify "{node} is offline"`, "{node} is offline"},
		{`notify "two  spaces"`, "two  spaces"},
		{`notify {node} is offline`, "{node} is offline"},
		{`notify "{node}" is "very hot"`, "{node} is very hot"},
		{`notify it's 5"`, `it's 5"`},
		{`notify`, ""},
	} {
		a, err := ParseAction(tc.text)
		if err != nil || !a.Notify || a.Message != tc.want {
			t.Errorf("ParseAction(%q) = message %q, notify %v, %v; want %q", tc.text, a.Message, a.Notify, err, tc.want)
		}
	}
}
