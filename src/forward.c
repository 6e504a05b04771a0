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
 * any error.  They log in to durable_cluster.database as dc_cluster (the
 * role the nodes reach the store as, no superuser); the servers'
 * pg_hba.conf and a password file of the server's operating-system user
 * must let them in (README, "Security").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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
#include "jsonb_build.h"
#include "saga.h"
#include "tenant.h"

PG_FUNCTION_INFO_V1(dc_forward_sql);

/* true while this backend serves durable_cluster.forward() */
bool		dc_serving_forward = false;

#define MAX_CONNECTIONS 16

/* how long one attempt to reach another server may take */
#define CONNECT_ATTEMPT_MS	1000

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
 * deadline; false once deadline has passed.
 */
static bool
wait_socket(PGconn *conn, bool writable, TimestampTz deadline)
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
	if (node_session)
		appendStringInfo(&buf, " -c statement_timeout=%d", dc_failure_timeout_ms);
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
			if (!wait_socket(conn, status == PGRES_POLLING_WRITING, deadline))
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
 * The session's connection to address, "" being the store, made if need
 * be; NULL if it cannot be made within deadline (nor within
 * CONNECT_ATTEMPT_MS for another server, which may be down: its shards are
 * about to move).  *why says why.
 */
static RemoteConnection *
connection_to(const char *address, TimestampTz deadline, char **why)
{
	RemoteConnection *rc = NULL;
	const char *keywords[8];
	const char *values[8];
	int			n = 0;

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

	keywords[n] = "user";
	values[n++] = DC_CLUSTER_ROLE;
	if (address[0] == '\0')
	{
		/* the store's connection string may name its own user */
		keywords[n] = "dbname";
		values[n++] = dc_store;
	}
	else
	{
		char	   *host = pstrdup(address);
		char	   *colon = strrchr(host, ':');

		if (colon == NULL)
			elog(ERROR, "durable_cluster: member address \"%s\" is not host:port", address);
		*colon = '\0';
		keywords[n] = "host";
		values[n++] = host;
		keywords[n] = "port";
		values[n++] = colon + 1;
		keywords[n] = "dbname";
		values[n++] = dc_database;
		deadline = Min(deadline, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 CONNECT_ATTEMPT_MS));
	}
	keywords[n] = "application_name";
	values[n++] = "durable_cluster forward";
	keywords[n] = "options";
	values[n++] = dc_cluster_session_options(false);
	keywords[n] = NULL;
	values[n] = NULL;

	rc->conn = dc_connect(keywords, values, address[0] == '\0', deadline);
	if (rc->conn == NULL || PQstatus(rc->conn) != CONNECTION_OK ||
		PQsetnonblocking(rc->conn, 1) != 0)
	{
		*why = rc->conn ? dc_libpq_error(rc->conn) : pstrdup("timed out");
		drop_connection(rc);
		return NULL;
	}
	return rc;
}

/*
 * Raise the error a failed result carries, with its SQLSTATE, message,
 * detail and hint (fallback when it has no message: libpq's own failure),
 * and context; frees the result.  Shared by the nodes' store statements
 * (store.c) and the calls to other servers here.
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
static void
raise_if_cut_short(PGresult *res, const char *address)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char	   *message;

	if (!(severity && strcmp(severity, "ERROR") != 0) &&
		!(state && strncmp(state, "57", 2) == 0))
		return;
	message = pstrdup(primary ? primary : "?");
	PQclear(res);
	ereport(ERROR,
			errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
			errmsg("the command was cut short on %s; it may or may not have been applied: %s",
				   address, message),
			errhint(DC_RETRY_HINT));
}

/*
 * Run a statement on rc's server with its parameters (text, or binary
 * where formats says so) and return its result, which the caller must
 * PQclear.  Any failure drops the connection.  Once a command (is_command)
 * was sent, a lost connection, a timeout or an interruption means it may
 * or may not have been applied: 40003; for a read, 08006.
 */
static PGresult *
remote_exec(RemoteConnection *rc, const char *address, const char *sql, int nparams,
			const char *const *values, const int *lengths, const int *formats,
			TimestampTz deadline, bool is_command)
{
	PGresult   *volatile res = NULL;
	volatile bool sent = false;
	MemoryContext cxt = CurrentMemoryContext;
	const char *where = address[0] ? address : "the durable_cluster store";

	PG_TRY();
	{
		PGresult   *next;
		int			flushed;

		if (!PQsendQueryParams(rc->conn, sql, nparams, NULL, values, lengths, formats, 0))
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not send to %s: %s", where, dc_libpq_error(rc->conn)));
		sent = true;
		while ((flushed = PQflush(rc->conn)) == 1)
			if (!wait_socket(rc->conn, true, deadline))
				ereport(ERROR,
						errcode(ERRCODE_CONNECTION_FAILURE),
						errmsg("timed out sending to %s", where));
		if (flushed < 0)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not send to %s: %s", where, dc_libpq_error(rc->conn)));

		/* every result to the end, never blocking in PQgetResult */
		for (;;)
		{
			while (PQisBusy(rc->conn))
			{
				if (!wait_socket(rc->conn, false, deadline))
					ereport(ERROR,
							errcode(ERRCODE_CONNECTION_FAILURE),
							errmsg("timed out waiting for %s", where));
				if (!PQconsumeInput(rc->conn))
					ereport(ERROR,
							errcode(ERRCODE_CONNECTION_FAILURE),
							errmsg("lost the connection to %s: %s", where,
								   dc_libpq_error(rc->conn)));
			}
			if ((next = PQgetResult(rc->conn)) == NULL)
				break;
			if (res == NULL)
				res = next;
			else
				PQclear(next);
		}
		if (res == NULL)
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("no result from %s", where));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * The statement may still run there (it ends by itself: a forwarded
		 * command has its own timeout).  Start afresh next time.
		 */
		if (res)
			PQclear(res);
		drop_connection(rc);
		if (!sent || !is_command)
			PG_RE_THROW();

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
				errmsg("no answer from %s; the command may or may not have been applied: %s",
					   where, edata->message),
				errhint(DC_RETRY_HINT));
	}
	PG_END_TRY();

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		char	   *fallback = dc_libpq_error(rc->conn);

		if (PQstatus(rc->conn) != CONNECTION_OK)
			drop_connection(rc);
		if (is_command)
			raise_if_cut_short(res, where);
		dc_raise_result_error(res, fallback, psprintf("on %s", where));
	}
	return res;
}

/*
 * Hand a validated command of role (NULL: the current user) to the server
 * at address, whose node owns its shard, and return the reply; NULL for a
 * tell that node took.  *moved
 * when that server's map no longer names one of its nodes the owner, or
 * when that server cannot be reached (it may be down: its shards are
 * about to move), in which case nothing was sent.
 */
Jsonb *
dc_forward(const char *address, const char *role, const char *mall_id, const char *user_id,
		   const DcCommand *cmd, bool tell, TimestampTz deadline, bool *moved)
{
	char	   *why;
	RemoteConnection *rc = connection_to(address, deadline, &why);
	const char *values[9];
	PGresult   *res;
	Jsonb	   *reply = NULL;

	*moved = true;
	if (rc == NULL)
	{
		ereport(DEBUG1, errmsg("could not reach %s: %s", address, why));
		return NULL;
	}

	/*
	 * The command as a client sends it, the transfer's record for a saga
	 * step, and the role that sent it, whose malls that server checks too.
	 */
	values[0] = CppAsString2(DC_FORWARD_FORMAT);
	values[1] = role ? role : GetUserNameFromId(GetUserId(), false);
	values[2] = mall_id;
	values[3] = user_id;
	values[4] = cmd->name;
	values[5] = dc_jsonb_doc_text(dc_command_payload(cmd));
	values[6] = cmd->saga_step ? dc_jsonb_doc_text((Jsonb *) cmd->payload) : NULL;
	values[7] = tell ? "t" : "f";
	values[8] = psprintf("%ld", Max(ms_left(deadline), 1));

	/* a second more than the other server's own wait, to hear how it ended */
	res = remote_exec(rc, address,
					  "SELECT durable_cluster.forward($1::integer, $2, $3, $4, $5, $6::jsonb,"
					  "                               $7::jsonb, $8::boolean, $9::integer)",
					  9, values, NULL, NULL, TimestampTzPlusMilliseconds(deadline, 1000),
					  true);
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
	char	   *why;
	RemoteConnection *rc = connection_to("", deadline, &why);
	PGresult   *res;
	char	   *value = NULL;

	if (rc == NULL)
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("could not connect to the durable_cluster store: %s", why));
	res = remote_exec(rc, "", sql, nparams, values, NULL, NULL, deadline, false);
	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

/*
 * durable_cluster.forward(format integer, role_name text, mall_id text,
 *                         user_id text, command text, payload jsonb,
 *                         saga_record jsonb, tell boolean,
 *                         timeout_ms integer) RETURNS jsonb
 * A command another server of the cluster forwards, as its client sent it
 * (saga_record: the transfer whose step it is, else NULL), in format
 * DC_FORWARD_FORMAT.  Served by this server's nodes only.  Everything is
 * checked again here as if it came from SQL, the malls of role_name too:
 * a server trusts no bytes of another.  Returns the reply, NULL for a tell
 * that was taken, or {"moved": true} if none of this server's nodes owns
 * the shard.
 */
Datum
dc_forward_sql(PG_FUNCTION_ARGS)
{
	DcCommand  *cmd = palloc(sizeof(DcCommand));
	char	   *role;
	char	   *mall_id;
	char	   *user_id;
	char	   *name;
	int			save_timeout = dc_ask_timeout_ms;
	Jsonb	   *reply;

	for (int i = 0; i < 9; i++)
		if (PG_ARGISNULL(i) && i != 6)
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.forward is NULL", i + 1));
	dc_check_usable();
	if (PG_GETARG_INT32(0) != DC_FORWARD_FORMAT)
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("a command was forwarded in format %d; this server reads format %d",
					   PG_GETARG_INT32(0), DC_FORWARD_FORMAT),
				errhint("The servers of one cluster must run versions of durable_cluster that forward in the same format."));
	role = text_to_cstring(PG_GETARG_TEXT_PP(1));
	mall_id = dc_id_argument(fcinfo, 2, "mall_id");
	user_id = dc_id_argument(fcinfo, 3, "user_id");
	name = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (PG_ARGISNULL(6))
	{
		dc_command_parse(name, PG_GETARG_JSONB_P(5), cmd);
		dc_tenant_check(role, mall_id, cmd->name);
	}
	else
	{
		dc_saga_step_parse(name, PG_GETARG_JSONB_P(5), PG_GETARG_JSONB_P(6),
						   mall_id, user_id, cmd);
		/* as dc_transfer checks it: a refund goes with its deduct */
		dc_tenant_check(role, mall_id,
						cmd->kind == DC_CMD_ADD_BALANCE ? "add_balance" : "deduct_balance");
	}

	dc_ask_timeout_ms = Max(PG_GETARG_INT32(8), 1);
	dc_serving_forward = true;
	PG_TRY();
	{
		reply = dc_ask(mall_id, user_id, cmd, PG_GETARG_BOOL(7));
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
