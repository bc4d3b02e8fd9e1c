package bus

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// Limits of the parser.
const (
	// maxControlLine bounds a control line (an operation and its
	// arguments, CRLF included) other than CONNECT, as nats-server's
	// default does.
	maxControlLine = 4096
	// maxConnectLine bounds the CONNECT line: it carries credentials (a
	// login token, a password) longer than other arguments.
	maxConnectLine = 32 << 10
	// readBufferSize is the size of a client's read buffer: the longest
	// line readOp accepts must fit in it.
	readBufferSize = maxConnectLine
)

// opKind is a client protocol operation.
type opKind uint8

const (
	opConnect opKind = iota + 1
	opPub            // PUB and HPUB
	opSub
	opUnsub
	opPing
	opPong
)

// op is one parsed client operation. Its strings and payload are the
// caller's: nothing of the reader's buffer is kept.
type op struct {
	kind    opKind
	connect []byte // CONNECT: the JSON object
	subject string
	reply   string // PUB, HPUB: the reply subject, "" without one
	queue   string // SUB: the queue group, "" without one
	sid     string // SUB, UNSUB
	max     uint64 // UNSUB: the maximum number of messages, 0 for none
	// hdr is the length of the headers at the front of payload (HPUB),
	// -1 for a PUB.
	hdr     int
	payload []byte
}

// protoError is a violation of the protocol: the server sends its text as
// -ERR and closes the connection.
type protoError string

func (e protoError) Error() string { return string(e) }

// The protocol errors, worded as nats-server words them.
const (
	errUnknownOp      protoError = "Unknown Protocol Operation"
	errControlLine    protoError = "Maximum Control Line Exceeded"
	errMaxPayload     protoError = "Maximum Payload Violation"
	errParser         protoError = "Parser Error"
	errInvalidSubject protoError = "Invalid Subject"
)

// readOp reads the next operation from r, whose buffer must hold at least
// readBufferSize bytes. It reads no more than the operation: the control
// line, then for PUB and HPUB exactly the payload and its CRLF, after
// checking the announced size against maxPayload, so a hostile size costs
// no allocation. It returns a protoError for input that breaks the
// protocol, or the reader's error (io.EOF at a clean end).
func readOp(r *bufio.Reader, maxPayload int) (op, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return op{}, errControlLine
		}
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return op{}, err
	}
	line = bytes.TrimRight(line, "\r\n")
	name, rest, _ := bytes.Cut(line, []byte{' '})
	if len(name) > 7 {
		return op{}, errUnknownOp
	}
	var upper [7]byte
	for i, b := range name {
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		upper[i] = b
	}
	verb := string(upper[:len(name)])
	if verb == "CONNECT" {
		rest = bytes.TrimSpace(rest)
		if len(rest) == 0 {
			return op{}, errParser
		}
		return op{kind: opConnect, connect: bytes.Clone(rest)}, nil
	}
	if len(line) > maxControlLine {
		return op{}, errControlLine
	}
	args := bytes.Fields(rest)
	switch verb {
	case "PING", "PONG":
		if len(args) != 0 {
			return op{}, errParser
		}
		if verb == "PING" {
			return op{kind: opPing}, nil
		}
		return op{kind: opPong}, nil
	case "PUB", "HPUB":
		return readPub(r, args, verb == "HPUB", maxPayload)
	case "SUB":
		if len(args) != 2 && len(args) != 3 {
			return op{}, errParser
		}
		o := op{kind: opSub, subject: string(args[0]), sid: string(args[len(args)-1])}
		if len(args) == 3 {
			o.queue = string(args[1])
		}
		if !validSubject(o.subject, true) {
			return op{}, errInvalidSubject
		}
		return o, nil
	case "UNSUB":
		if len(args) != 1 && len(args) != 2 {
			return op{}, errParser
		}
		o := op{kind: opUnsub, sid: string(args[0])}
		if len(args) == 2 {
			n, err := strconv.ParseUint(string(args[1]), 10, 63)
			if err != nil {
				return op{}, errParser
			}
			o.max = n
		}
		return o, nil
	}
	return op{}, errUnknownOp
}

// readPub parses the arguments of PUB (subject [reply] size) or HPUB
// (subject [reply] header-size total-size) and reads the payload.
func readPub(r *bufio.Reader, args [][]byte, headers bool, maxPayload int) (op, error) {
	sizes := 1
	if headers {
		sizes = 2
	}
	if len(args) != sizes+1 && len(args) != sizes+2 {
		return op{}, errParser
	}
	o := op{kind: opPub, subject: string(args[0]), hdr: -1}
	if len(args) == sizes+2 {
		o.reply = string(args[1])
		if !validSubject(o.reply, false) {
			return op{}, errInvalidSubject
		}
	}
	if !validSubject(o.subject, false) {
		return op{}, errInvalidSubject
	}
	nums := args[len(args)-sizes:]
	total, err := parseSize(nums[len(nums)-1])
	if err != nil {
		return op{}, err
	}
	if headers {
		if o.hdr, err = parseSize(nums[0]); err != nil {
			return op{}, err
		}
		if o.hdr > total {
			return op{}, errParser
		}
	}
	if total > maxPayload {
		return op{}, errMaxPayload
	}
	buf := make([]byte, total+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return op{}, err
	}
	if buf[total] != '\r' || buf[total+1] != '\n' {
		return op{}, errParser
	}
	o.payload = buf[:total:total]
	return o, nil
}

// parseSize parses a decimal size of at most 9 digits (a size beyond that
// is beyond any maximum payload).
func parseSize(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 9 {
		if len(b) > 9 {
			return 0, errMaxPayload
		}
		return 0, errParser
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errParser
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}
