package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Exit statuses. Scripts branch on them, so they only ever gain members.
const (
	exitOK       = 0
	exitError    = 1 // the line on stderr says why: "pairdb: CODE: message"
	exitSiblings = 3 // get found concurrent values; --json shows them all
)

// exitStatus ends a command with a status other than exitError; its message,
// if any, is printed like an error's.
type exitStatus struct {
	code int
	msg  string
}

func (e *exitStatus) Error() string { return e.msg }

// report prints err as one line on w and returns the process's exit status.
// Server errors already read "CODE: message" (bus.Error); the CLI's own
// checks build the same kind of error, so every failure has that form.
func report(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	code := exitError
	var st *exitStatus
	if errors.As(err, &st) {
		code = st.code
	}
	msg := err.Error()
	var be *status.Error
	if errors.As(err, &be) {
		// A server error wrapped with what the CLI was doing still leads
		// with its code: "CODE: doing X: message".
		prefix := be.Code.String() + ": "
		msg = prefix + strings.Replace(msg, prefix, "", 1)
	}
	if msg != "" {
		_, _ = io.WriteString(w, "pairdb: "+oneLine(msg)+"\n")
	}
	return code
}

// oneLine keeps an error on one line: a script reading stderr, or a log
// collector, takes a line as one message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// jsonOut is the CLI's --json: the API's own JSON (protobuf JSON with the
// proto field names: bytes in base64, 64-bit integers as strings, fields at
// their zero value left out), so a script written against one works on the
// other.
var jsonOut = protojson.MarshalOptions{UseProtoNames: true}

// marshalJSON encodes m, indented. protojson varies its spacing on purpose
// (so nobody compares its bytes); re-indenting gives a stable layout.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		return nil, errors.Wrap(err, "encode the answer as JSON")
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, errors.Wrap(err, "indent the JSON answer")
	}
	return out.Bytes(), nil
}

// addJSONFlag registers --json on cmd.
func addJSONFlag(cmd *cobra.Command, v *bool) {
	cmd.Flags().BoolVar(v, "json", false,
		"print the answer as JSON, as the API gives it (bytes in base64, 64-bit numbers as strings, zero values left out)")
}

// printJSON writes m as JSON followed by a newline.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printJSONList writes {"<field>": [m...]} for answers the CLI assembles
// from several responses (every page of a list, every repair round).
func printJSONList[M proto.Message](w io.Writer, field string, ms []M) error {
	items := make([]json.RawMessage, 0, len(ms))
	for _, m := range ms {
		b, err := jsonOut.Marshal(m)
		if err != nil {
			return errors.Wrap(err, "encode the answer as JSON")
		}
		items = append(items, b)
	}
	// MarshalIndent re-indents the items too.
	b, err := json.MarshalIndent(map[string][]json.RawMessage{field: items}, "", "  ")
	if err != nil {
		return errors.Wrap(err, "encode the answer as JSON")
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// isTerminal reports whether f is a character device (a terminal), where a
// person rather than a program reads.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// usageError is a mistake in the command line the CLI itself catches.
func usageError(format string, args ...any) error {
	return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, format, args...)
}

// writeValue writes v untouched, plus a newline when out is a terminal and
// v does not end in one (a shell prompt would otherwise follow the value on
// its line). Piped or redirected, the bytes are exactly the stored value.
func writeValue(out io.Writer, v []byte, terminal bool) error {
	if _, err := out.Write(v); err != nil {
		return err
	}
	if terminal && !bytes.HasSuffix(v, []byte("\n")) {
		_, err := out.Write([]byte("\n"))
		return err
	}
	return nil
}
