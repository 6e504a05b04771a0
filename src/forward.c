/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  A caller's backend talking to other servers of the cluster: commands
 *	  forwarded to the server whose node owns their shard, and reads of the
 *	  store when it is another server.
 *
 * In a cluster of several servers, each server's shard map names, for a
 * shard owned elsewhere, the owner's server (inbox.h).  dc_send_command
 * and dc_tell then hand the validated command, as it would sit in a
 * request slot, to durable_cluster.forward() on that server, which queues
 * it to its node and returns the reply.  A forwarded command is never
 * forwarded again: if the shard moved on meanwhile, forward() says so and
 * the caller routes it anew with its own map, until ask_timeout.
 *
 * Connections are made with libpq, without blocking: every wait is on the
 * socket and the backend's latch, so a cancel or a terminate is served at
 * once.  They are kept for the session, one per server, and dropped after
 * any error.  They log in to durable_cluster.database as the bootstrap
 * superuser of this server (the role the nodes reach the store as); the
 * servers' pg_hba.conf and a ~/.pgpass of the server's operating-system
 * user must let them in.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "api.h"
#include "durable_cluster.h"
#include "forward.h"

PG_FUNCTION_INFO_V1(dc_forward_sql);

/* true while this backend serves durable_cluster.forward() */
bool		dc_serving_forward = false;

#define MAX_CONNECTIONS 16

typedef struct RemoteConnection
{
	char	   *key;			/* address, or "" for the store */
	PGconn	   *conn;
} RemoteConnection;

static RemoteConnection connections[MAX_CONNECTIONS];
static int	nconnections = 0;

static void
drop_connection(RemoteConnection *rc)
{
	if (rc->conn)
		PQfinish(rc->conn);
	rc->conn = NULL;
}

static long
ms_left(TimestampTz deadline)
{
	return Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline), 0);
}

/* Wait for the socket (readable or writable) or the latch, until deadline. */
static void
wait_socket(PGconn *conn, bool writable, TimestampTz deadline, const char *what)
{
	int			rc;

	if (ms_left(deadline) <= 0)
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("timed out %s", what));
	rc = WaitLatchOrSocket(MyLatch,
						   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH |
						   (writable ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE),
						   PQsocket(conn), ms_left(deadline) + 1, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/* The conninfo that reaches address ("host:port"), or the store for "". */
static char *
conninfo_for(const char *address)
{
	char	   *host;
	char	   *colon;
	char	   *user = GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false);

	if (address[0] == '\0')
		return psprintf("%s user='%s' application_name='durable_cluster forward'",
						dc_store, user);
	host = pstrdup(address);
	colon = strrchr(host, ':');
	*colon = '\0';
	return psprintf("host='%s' port='%s' dbname='%s' user='%s' "
					"application_name='durable_cluster forward'",
					host, colon + 1, dc_database, user);
}

/*
 * The session's connection to address, made if need be, without blocking.
 * If it cannot be made: NULL when quiet, an error otherwise.
 */
static RemoteConnection *
connection_to(const char *address, TimestampTz deadline, bool quiet)
{
	RemoteConnection *rc = NULL;
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	for (int i = 0; i < nconnections && rc == NULL; i++)
		if (strcmp(connections[i].key, address) == 0)
			rc = &connections[i];
	if (rc == NULL)
	{
		/* past the last place, the first connection makes room */
		if (nconnections == MAX_CONNECTIONS)
		{
			rc = &connections[0];
			drop_connection(rc);
			pfree(rc->key);
		}
		else
			rc = &connections[nconnections++];
		rc->key = MemoryContextStrdup(TopMemoryContext, address);
	}
	if (rc->conn && PQstatus(rc->conn) == CONNECTION_OK)
		return rc;
	drop_connection(rc);

	rc->conn = PQconnectStart(conninfo_for(address));
	if (rc->conn == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OUT_OF_MEMORY),
				errmsg("out of memory connecting to %s", address[0] ? address : "the store"));
	PG_TRY();
	{
		while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
		{
			if (PQstatus(rc->conn) == CONNECTION_BAD)
				break;
			wait_socket(rc->conn, status == PGRES_POLLING_WRITING, deadline,
						"connecting to another server of the cluster");
			status = PQconnectPoll(rc->conn);
		}
		if (PQstatus(rc->conn) != CONNECTION_OK && quiet)
		{
			ereport(DEBUG1,
					errmsg("could not connect to %s: %s", address,
						   pchomp(PQerrorMessage(rc->conn))));
			drop_connection(rc);
		}
		else if (PQstatus(rc->conn) != CONNECTION_OK)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not connect to %s: %s",
						   address[0] ? address : "the durable_cluster store",
						   pchomp(PQerrorMessage(rc->conn))));
		else if (PQsetnonblocking(rc->conn, 1) != 0)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not make the connection to %s non-blocking", address));
	}
	PG_CATCH();
	{
		drop_connection(rc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return rc->conn ? rc : NULL;
}

/* Raise the error a result carries, with the other server's SQLSTATE. */
static void
raise_remote_error(PGresult *res, const char *address)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	int			sqlstate = ERRCODE_CONNECTION_FAILURE;

	if (state && strlen(state) == 5)
		sqlstate = MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4]);
	ereport(ERROR,
			errcode(sqlstate),
			errmsg("%s", primary ? primary : "error on another server of the cluster"),
			detail ? errdetail("%s", detail) : 0,
			hint ? errhint("%s", hint) : 0,
			errcontext("on %s", address[0] ? address : "the durable_cluster store"));
}

/*
 * Run a statement on address with its parameters (text, or binary where
 * formats says so) and return its result, which the caller must PQclear.
 * Any failure drops the connection; a statement that does not finish by
 * deadline is cancelled.
 */
static PGresult *
remote_exec(RemoteConnection *rc, const char *address, const char *sql, int nparams,
			const char *const *values, const int *lengths, const int *formats,
			TimestampTz deadline)
{
	PGresult   *volatile res = NULL;
	volatile bool sent = false;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		PGresult   *next;
		int			flushed;

		if (!PQsendQueryParams(rc->conn, sql, nparams, NULL, values, lengths, formats, 0))
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not send to %s: %s", address[0] ? address : "the store",
						   pchomp(PQerrorMessage(rc->conn))));
		sent = true;
		while ((flushed = PQflush(rc->conn)) == 1)
			wait_socket(rc->conn, true, deadline, "sending to another server of the cluster");
		if (flushed < 0)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not send to %s: %s", address[0] ? address : "the store",
						   pchomp(PQerrorMessage(rc->conn))));
		for (;;)
		{
			if (!PQconsumeInput(rc->conn))
				ereport(ERROR,
						errcode(ERRCODE_CONNECTION_FAILURE),
						errmsg("lost the connection to %s: %s",
							   address[0] ? address : "the store",
							   pchomp(PQerrorMessage(rc->conn))));
			if (!PQisBusy(rc->conn))
				break;
			wait_socket(rc->conn, false, deadline, "waiting for another server of the cluster");
		}
		while ((next = PQgetResult(rc->conn)) != NULL)
		{
			if (res == NULL)
				res = next;
			else
				PQclear(next);
		}
		if (res == NULL)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("no result from %s", address[0] ? address : "the store"));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* a statement may still run there: cancel it, and start afresh */
		if (PQtransactionStatus(rc->conn) == PQTRANS_ACTIVE)
		{
			PGcancel   *cancel = PQgetCancel(rc->conn);
			char		errbuf[256];

			if (cancel)
			{
				(void) PQcancel(cancel, errbuf, sizeof(errbuf));
				PQfreeCancel(cancel);
			}
		}
		if (res)
			PQclear(res);
		drop_connection(rc);
		if (!sent)
			PG_RE_THROW();

		/* once sent, the statement may have done its work there or not */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
				errmsg("no answer from %s; the command may or may not have been applied: %s",
					   address[0] ? address : "the store", edata->message),
				errhint("Send it again with the same \"command_id\" in its payload, which applies it at most once."));
	}
	PG_END_TRY();

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		PG_TRY();
		{
			raise_remote_error(res, address);
		}
		PG_FINALLY();
		{
			PQclear(res);
		}
		PG_END_TRY();
	}
	return res;
}

/*
 * Hand a validated command to the server at address, whose node owns its
 * shard, and return the reply; NULL for a tell that node took.  *moved
 * when that server's map no longer names one of its nodes the owner, or
 * when that server cannot be reached (it may be down: its shards are
 * about to move), in which case nothing was sent.
 */
Jsonb *
dc_forward(const char *address, const char *mall_id, const char *user_id,
		   const DcCommand *cmd, bool tell, TimestampTz deadline, bool *moved)
{
	RemoteConnection *rc = connection_to(address, deadline, true);
	char	   *timeout = psprintf("%ld", Max(ms_left(deadline), 1));
	const char *values[5] = {mall_id, user_id, (const char *) cmd, tell ? "t" : "f", timeout};
	int			lengths[5] = {0, 0, sizeof(DcCommand), 0, 0};
	int			formats[5] = {0, 0, 1, 0, 0};
	PGresult   *res;
	Jsonb	   *reply = NULL;

	*moved = true;
	if (rc == NULL)
		return NULL;

	/* a second more than the other server's own wait, to hear how it ended */
	res = remote_exec(rc, address,
					  "SELECT durable_cluster.forward($1, $2, $3::bytea, $4::boolean, $5::integer)",
					  5, values, lengths, formats, TimestampTzPlusMilliseconds(deadline, 1000));
	*moved = false;
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
	{
		reply = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												   CStringGetDatum(PQgetvalue(res, 0, 0))));
		*moved = getKeyJsonValueFromContainer(&reply->root, "moved", 5, NULL) != NULL;
	}
	PQclear(res);
	return *moved ? NULL : reply;
}

/*
 * The first column of the first row of a statement run on the store,
 * which is another server; NULL if none.  Parameters are text.
 */
char *
dc_store_value(const char *sql, int nparams, const char *const *values)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   dc_ask_timeout_ms);
	PGresult   *res;
	char	   *value = NULL;

	res = remote_exec(connection_to("", deadline, false), "", sql, nparams, values,
					  NULL, NULL, deadline);
	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

/*
 * durable_cluster.forward(mall_id text, user_id text, command bytea,
 *                         tell boolean, timeout_ms integer) RETURNS jsonb
 * A command forwarded by another server of the cluster, as that server
 * validated it: served by this server's nodes only.  Returns the reply,
 * NULL for a tell that was taken, or {"moved": true} if none of this
 * server's nodes owns the shard.
 */
Datum
dc_forward_sql(PG_FUNCTION_ARGS)
{
	bytea	   *raw;
	DcCommand  *cmd;
	char	   *mall_id;
	char	   *user_id;
	int			save_timeout = dc_ask_timeout_ms;
	Jsonb	   *reply;

	for (int i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.forward is NULL", i + 1));
	dc_check_usable();
	mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	user_id = dc_id_argument(fcinfo, 1, "user_id");
	raw = PG_GETARG_BYTEA_PP(2);
	if (VARSIZE_ANY_EXHDR(raw) != sizeof(DcCommand))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded command of %zu bytes, not %zu: servers of one cluster must run the same build of durable_cluster",
					   (size_t) VARSIZE_ANY_EXHDR(raw), sizeof(DcCommand)));
	cmd = palloc(sizeof(DcCommand));
	memcpy(cmd, VARDATA_ANY(raw), sizeof(DcCommand));

	dc_ask_timeout_ms = Max(PG_GETARG_INT32(4), 1);
	dc_serving_forward = true;
	PG_TRY();
	{
		reply = dc_ask(mall_id, user_id, cmd, PG_GETARG_BOOL(3));
	}
	PG_FINALLY();
	{
		dc_serving_forward = false;
		dc_ask_timeout_ms = save_timeout;
	}
	PG_END_TRY();
	if (reply == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(reply);
}

/* The reply durable_cluster.forward() gives when the shard is not here. */
Jsonb *
dc_moved_reply(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"moved\": true}")));
}
