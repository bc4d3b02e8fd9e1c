// Package notify delivers one notification of the rule engine over one
// channel: a [Webhook] (an HTTP POST of JSON) or an email through [SMTP].
//
// The package makes exactly one attempt per Send and owns no state between
// calls: the caller (the rule engine) schedules retries. [Permanent] tells it
// whether an error can go away on retry, [Backoff] how long to wait before the
// next attempt and [GiveUpAfter] when to stop and mark the notification
// failed. Backoff is deterministic in the message ID and the attempt number,
// so the redundant clouds that may send the same notification wait alike, and
// the receiver deduplicates them by Message.ID (the webhook's Idempotency-Key
// header, the email's Message-ID).
//
// Send starts no goroutine that outlives it, and its error says which
// channel failed (the webhook's URL with any password redacted, the SMTP
// server's address) and never contains a password or a webhook secret.
package notify
