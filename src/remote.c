/*-------------------------------------------------------------------------
 *
 * remote.c
 *	  The sessions a caller's backend opens to other servers of the cluster
 *	  (commands forwarded there, forward.c) and to the store when it is
 *	  another server (reads, dc_store_value).
 *
 * They are made with libpq_client.c, kept for the session, one per server,
 * and dropped after any error.  They log in to durable_cluster.database as
 * dc_cluster (the role the nodes reach the store as, no superuser); the
 * servers' pg_hba.conf and a password file of the server's operating-system
 * user must let them in (docs/security.md).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "libpq_client.h"
#include "remote.h"
#include "settings.h"

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
			const char *const *values, TimestampTz deadline, bool is_command)
{
	PGresult   *volatile res = NULL;
	volatile bool sent = false;
	MemoryContext cxt = CurrentMemoryContext;
	const char *where = address[0] ? address : "the durable_cluster store";

	PG_TRY();
	{
		PGresult   *next;
		int			flushed;

		if (!PQsendQueryParams(rc->conn, sql, nparams, NULL, values, NULL, NULL, 0))
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("could not send to %s: %s", where, dc_libpq_error(rc->conn)));
		sent = true;
		while ((flushed = PQflush(rc->conn)) == 1)
			if (!dc_pq_wait_socket(rc->conn, true, deadline))
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
			switch (dc_pq_await(rc->conn, NULL, deadline, true))
			{
				case DC_PQ_READY:
					break;
				case DC_PQ_TIMED_OUT:
					ereport(ERROR,
							errcode(ERRCODE_CONNECTION_FAILURE),
							errmsg("timed out waiting for %s", where));
					break;
				case DC_PQ_LOST:
					ereport(ERROR,
							errcode(ERRCODE_CONNECTION_FAILURE),
							errmsg("lost the connection to %s: %s", where,
								   dc_libpq_error(rc->conn)));
					break;
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
 * Run sql (text parameters) on the server at address, "" being the store,
 * in this session's connection to it, and return its result.  NULL, with
 * *why saying why, when no connection could be made by connect_by: then
 * nothing was sent.  An error there is raised here with its SQLSTATE; for
 * a command (is_command), one that cut it short or an answer that did not
 * come by deadline is 40003: it may or may not have been applied.
 */
PGresult *
dc_remote_exec(const char *address, const char *sql, int nparams, const char *const *values,
			   TimestampTz connect_by, TimestampTz deadline, bool is_command, char **why)
{
	RemoteConnection *rc = connection_to(address, connect_by, why);

	if (rc == NULL)
		return NULL;
	return remote_exec(rc, address, sql, nparams, values, deadline, is_command);
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
	PGresult   *res = dc_remote_exec("", sql, nparams, values, deadline, deadline, false, &why);
	char	   *value = NULL;

	if (res == NULL)
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("could not connect to the durable_cluster store: %s", why));
	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}
