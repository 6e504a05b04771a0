/*-------------------------------------------------------------------------
 *
 * libpq_client.c
 *	  What every libpq session the cluster opens shares: its options,
 *	  connecting without blocking, waiting for results, and errors.
 *
 * Used by a node's store session (store.c) and by the sessions a caller's
 * backend opens to other servers (remote.c).  Every wait is on the socket
 * and the latch, with a deadline, so nothing blocks past it and a caller's
 * cancel is served at once.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "libpq_client.h"
#include "settings.h"

/*
 * libpq's message about conn's last failure, on one line: it spans several
 * for a connection string of several hosts, and callers' logs and psql's
 * LAST_ERROR_MESSAGE read better without.
 */
char *
dc_libpq_error(PGconn *conn)
{
	char	   *msg = pchomp(PQerrorMessage(conn));

	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return msg;
}

static long
ms_left(TimestampTz deadline)
{
	return Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline), 0);
}

/*
 * Wait for conn's socket (readable or writable) or the latch, until
 * deadline, serving interrupts; false once deadline has passed.
 */
bool
dc_pq_wait_socket(PGconn *conn, bool writable, TimestampTz deadline)
{
	int			rc;

	if (ms_left(deadline) <= 0)
		return false;
	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
						   (writable ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE),
						   PQsocket(conn), ms_left(deadline) + 1, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * Wait until conn has a whole result to give (PQisBusy is false), reading
 * what arrives, until deadline.  set: the caller's wait event set on conn's
 * socket and the latch, or NULL for a wait of its own.  interruptible:
 * serve interrupts (a caller's cancel) while waiting; a node does not,
 * whose main loop looks at everything after the statement.
 */
DcPqWait
dc_pq_await(PGconn *conn, WaitEventSet *set, TimestampTz deadline, bool interruptible)
{
	while (PQisBusy(conn))
	{
		long		left = ms_left(deadline);
		bool		readable;

		if (left <= 0)
		{
			/*
			 * A process paused or descheduled past the deadline may find
			 * the answer already arrived: read what is there before
			 * calling it a timeout.
			 */
			if (!PQconsumeInput(conn))
				return DC_PQ_LOST;
			return PQisBusy(conn) ? DC_PQ_TIMED_OUT : DC_PQ_READY;
		}
		if (set)
		{
			WaitEvent	event;

			if (WaitEventSetWait(set, left, &event, 1, PG_WAIT_EXTENSION) == 0)
				continue;
			if (event.events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			readable = (event.events & WL_SOCKET_READABLE) != 0;
		}
		else
		{
			int			rc = WaitLatchOrSocket(MyLatch,
											   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
											   WL_SOCKET_READABLE,
											   PQsocket(conn), left, PG_WAIT_EXTENSION);

			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
			readable = (rc & WL_SOCKET_READABLE) != 0;
		}
		if (interruptible)
			CHECK_FOR_INTERRUPTS();
		if (readable && !PQconsumeInput(conn))
			return DC_PQ_LOST;
	}
	return DC_PQ_READY;
}

/*
 * The "options" of every session the cluster opens.  An empty search_path,
 * so that nothing an ordinary role created is ever found by name there;
 * lock waits bounded by failure_timeout (by then a node is failed over
 * anyway), and for a node's store session its statements too; and a
 * backend whose client went away notices it even inside a long statement,
 * so that a connection a node gave up on frees what it held at once.
 */
char *
dc_cluster_session_options(bool node_session)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "-c search_path= -c lock_timeout=%d "
					 "-c client_connection_check_interval=%d",
					 dc_failure_timeout_ms, Min(1000, Max(dc_failure_timeout_ms / 4, 10)));
	/*
	 * A node's statements are prepared once (store.c) and carry parameters
	 * that a custom plan would fold into a cheaper-looking plan each time,
	 * so the store would plan them on every call: plan them once.
	 */
	if (node_session)
		appendStringInfo(&buf, " -c statement_timeout=%d -c plan_cache_mode=force_generic_plan",
						 dc_failure_timeout_ms);
	return buf.data;
}

/*
 * Connect without blocking: PQconnectStartParams and PQconnectPoll, waiting
 * on the socket and the latch until deadline.  Returns the connection,
 * whose status says whether it worked, or NULL if deadline passed.  TCP
 * keepalives let a dead peer be noticed while a result is awaited.
 */
PGconn *
dc_connect(const char *const *keywords, const char *const *values, bool expand_dbname,
		   TimestampTz deadline)
{
	const char *kw[16];
	const char *val[16];
	int			n = 0;
	PGconn	   *volatile conn;
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	/* first, so that an expanded connection string may set its own */
	kw[n] = "keepalives_idle";
	val[n++] = "10";
	kw[n] = "keepalives_interval";
	val[n++] = "5";
	kw[n] = "keepalives_count";
	val[n++] = "3";
	for (int i = 0; keywords[i] != NULL && n < lengthof(kw) - 1; i++)
	{
		kw[n] = keywords[i];
		val[n++] = values[i];
	}
	kw[n] = NULL;
	val[n] = NULL;

	conn = PQconnectStartParams(kw, val, expand_dbname);
	if (conn == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory while connecting to another server"));
	PG_TRY();
	{
		while (PQstatus(conn) != CONNECTION_BAD &&
			   status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
		{
			if (!dc_pq_wait_socket(conn, status == PGRES_POLLING_WRITING, deadline))
			{
				PQfinish(conn);
				conn = NULL;
				break;
			}
			status = PQconnectPoll(conn);
		}
	}
	PG_CATCH();
	{
		if (conn)
			PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return conn;
}

/*
 * Raise the error a failed result carries, with its SQLSTATE, message,
 * detail and hint (fallback when it has no message: libpq's own failure),
 * and context; frees the result.  Shared by the nodes' store statements
 * (store.c) and the calls to other servers (remote.c).
 */
void
dc_raise_result_error(PGresult *res, const char *fallback, const char *context)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	int			sqlstate = ERRCODE_CONNECTION_FAILURE;
	char	   *message = pstrdup(primary ? primary : fallback);
	char	   *detail_copy = detail ? pstrdup(detail) : NULL;
	char	   *hint_copy = hint ? pstrdup(hint) : NULL;

	if (state && strlen(state) == 5)
		sqlstate = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	PQclear(res);
	ereport(ERROR,
			errcode(sqlstate),
			errmsg("%s", message),
			detail_copy ? errdetail("%s", detail_copy) : 0,
			hint_copy ? errhint("%s", hint_copy) : 0,
			errcontext("%s", context));
	pg_unreachable();
}

/*
 * For a forwarded command: raise 40003, freeing the result, if its error
 * may have cut the command short after it was queued there: the session
 * there ended (FATAL) or was interrupted (class 57: cancelled, shut down).
 */
