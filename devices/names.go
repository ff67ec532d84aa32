package devices

import (
	"errors"
	"fmt"
)

// DeadLetterStream is the stream that receives readings refused by [Validate], with the [Reason] in a
// header. Devices may not publish to it directly (see [ErrReservedStream]): only the edge writes there,
// so everything in it is known to be a refusal and can be counted as such.
const DeadLetterStream = "deadletter"

// SchemaStream is the stream in which the edge records the schemas its streams declare, one record
// per stream and schema version, keyed by the stream name; central builds its schema registry from
// it. Like [DeadLetterStream] it is written by the edge only.
const SchemaStream = "schemas"

// Reserved reports whether only the edge may write a stream.
func Reserved(stream string) bool { return stream == DeadLetterStream || stream == SchemaStream }

// Limits on names. A device id travels as a topic level, a log key, a certificate CN and a Kafka key;
// a stream name becomes a directory name in the log, so it is the stricter of the two.
const (
	MaxDeviceIDLen   = 128
	MaxStreamNameLen = 64
)

var (
	// ErrInvalidDeviceID reports a device id outside the allowed charset or length; see [ValidDeviceID].
	ErrInvalidDeviceID = errors.New("invalid device id")
	// ErrInvalidStream reports a stream name outside the allowed charset or length; see [ValidStream].
	ErrInvalidStream = errors.New("invalid stream name")
	// ErrReservedStream reports a device trying to publish into a stream only the edge may write.
	ErrReservedStream = errors.New("reserved stream name")
)

// ValidDeviceID reports whether id may name a device: 1 to [MaxDeviceIDLen] bytes of ASCII letters,
// digits, '.', '_', ':' and '-', starting with a letter or digit. The first-character rule keeps ids
// from reading as "." / ".." path parts or as command-line flags ("-x"); ':' admits MAC addresses.
// MQTT wildcards, '/', '$' and spaces are out, so an id is always exactly one topic level.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > MaxDeviceIDLen || !isAlnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

// ValidStream reports whether name may name a stream: 1 to [MaxStreamNameLen] bytes of lower-case
// ASCII letters, digits, '.', '_' and '-', and not "." or "..". Storage uses the name as a directory,
// so it must be portable and case-insensitive-filesystem safe.
func ValidStream(name string) bool {
	if len(name) == 0 || len(name) > MaxStreamNameLen || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// CheckDeviceID returns nil for a valid id, else an error wrapping [ErrInvalidDeviceID] that says which
// rule was broken, for messages shown to operators.
func CheckDeviceID(id string) error {
	if ValidDeviceID(id) {
		return nil
	}
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidDeviceID)
	case len(id) > MaxDeviceIDLen:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidDeviceID, len(id), MaxDeviceIDLen)
	default:
		return fmt.Errorf("%w %q: use letters, digits, '.', '_', ':' and '-', starting with a letter or digit", ErrInvalidDeviceID, id)
	}
}

// CheckStream is [ValidStream] with an explanatory error wrapping [ErrInvalidStream].
func CheckStream(name string) error {
	if ValidStream(name) {
		return nil
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidStream)
	case len(name) > MaxStreamNameLen:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidStream, len(name), MaxStreamNameLen)
	default:
		return fmt.Errorf("%w %q: use lower-case letters, digits, '.', '_' and '-', not \".\" or \"..\"", ErrInvalidStream, name)
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
