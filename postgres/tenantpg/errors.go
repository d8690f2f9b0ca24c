package tenantpg

import (
	"context"
	"io"
	"net"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5/pgconn"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// SQLSTATE codes the store reacts to
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	sqlUniqueViolation  = "23505"
	sqlCheckViolation   = "23514"
	sqlUndefinedTable   = "42P01"
	sqlAdminShutdown    = "57P01"
	sqlCrashShutdown    = "57P02"
	sqlCannotConnectNow = "57P03" // starting up, or in recovery
	sqlTooManyConns     = "53300"
	sqlQueryCanceled    = "57014" // statement_timeout or a cancel request
)

// classify turns a database failure into a typed error with the cause
// attached. The split that matters to callers is UNAVAILABLE (retry later,
// take the coordinator out of readiness) versus everything else (retrying
// will not help). The message reads "<op>: tenant database unreachable:
// <cause>" for the former.
func classify(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if unreachable(err) {
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, format+": tenant database unreachable", args...)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlCheckViolation:
			// Records are validated before every write, so this means the
			// schema and tenant.Validate disagree; still the caller's input
			// that was refused, never an INTERNAL for bad input.
			return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, format+": rejected by constraint %s", append(args, pgErr.ConstraintName)...)
		case sqlUndefinedTable:
			return status.Wrap(pb.ErrorCode_INTERNAL, err,
				format+": tenants table missing; run the migrations (Config.Migrate or postgres/migrate)", args...)
		}
	}
	return status.Wrap(pb.ErrorCode_INTERNAL, err, format, args...)
}

// unreachable reports whether err means "could not talk to the database"
// rather than "the database answered no": connection setup failures,
// sockets that broke mid-call, a server that is shutting down or not yet
// accepting, and calls that ran out of time (the contract returns at ctx's
// deadline with the context error attached, and a database that does not
// answer in time is, to the caller, unavailable).
func unreachable(err error) bool {
	var connErr *pgconn.ConnectError
	var netErr net.Error
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		// The server answered. Class 08 is connection exception; the 57P0x
		// family is the server going away or not yet up.
		switch c := pgErr.Code; {
		case strings.HasPrefix(c, "08"), c == sqlAdminShutdown, c == sqlCrashShutdown,
			c == sqlCannotConnectNow, c == sqlTooManyConns, c == sqlQueryCanceled:
			return true
		}
		return false
	case errors.As(err, &connErr), errors.As(err, &netErr), pgconn.Timeout(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, pgconn.ErrConnClosed):
		return true
	}
	return false
}
