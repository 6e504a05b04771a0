/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The only code that reads or writes the cluster tables on behalf of
 *	  node workers: membership, the shard map, fencing and entity state.
 *
 * A node reaches the store over libpq, even when the store is the node's
 * own server, and waits for each answer on its socket and its latch.  Each call
 * is a single statement, run by a backend of the store in a transaction of
 * its own.  So a node never holds a lock in the store while it is not
 * running: when a node worker is paused (SIGSTOP, a stalled machine), the
 * statement it sent still finishes and commits or aborts, and nothing it
 * holds can stop other nodes from taking its shards over.
 *
 * Fencing: a batch is written by one call of durable_cluster.write_batch()
 * (store_batch.c), which locks the rows of the batch's shards (FOR SHARE)
 * and checks that they still name this node at the epochs it was given, in
 * the same transaction as the writes.  A change of owner updates those rows, so it waits for the batch
 * to commit, and a batch that comes after it sees the new epoch and writes
 * nothing: a node that lost a shard cannot commit to it.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "access/genam.h"
#include "access/table.h"
#include "catalog/pg_database.h"
#include "utils/fmgroids.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_bswap.h"
#include "postmaster/postmaster.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "jsonb_build.h"
#include "libpq_client.h"
#include "pg_compat.h"
#include "settings.h"
#include "shared_memory.h"
#include "store.h"
#include "store_transport.h"

static PGconn *store_conn = NULL;

/* how this node's batches reach the store, chosen by dc_store_init */
static const DcStoreTransport libpq_transport;
static const DcStoreTransport *transport = &libpq_transport;

/* waits for store_conn's socket or the latch; made once per connection */
static WaitEventSet *store_wait = NULL;

/* statements prepared on store_conn: the address of their text, with or without the heartbeat */
#define MAX_PREPARED	32
static const char *prepared[MAX_PREPARED];
static bool prepared_refresh[MAX_PREPARED]; /* prepared with the heartbeat's parameters */
static int	n_prepared = 0;

/*
 * The oids of the types of write_batch's parameter, which its binary form
 * names: the extension's own, so looked up in the store, once per
 * connection as statements are prepared once per connection (a new
 * extension in the store drops the connection: dc_store_extension).
 */
typedef struct BatchTypes
{
	Oid			shard,			/* durable_cluster.batch_shard */
				shard_array,
				entity,			/* durable_cluster.batch_entity */
				entity_array,
				log_entry,		/* durable_cluster.batch_log_entry */
				log_entry_array,
				saga_step,		/* durable_cluster.batch_saga_step */
				saga_step_array;
} BatchTypes;

static BatchTypes batch_types;
static bool batch_types_known = false;

static char *store_conninfo = NULL;
static char *store_application_name = NULL;

/* the store's extension, as the tick last found it (dc_store_extension) */
static Oid	store_extension = InvalidOid;

/* LISTEN durable_cluster was sent on store_conn */
static bool listening = false;

/* a store on another server announced a change (LISTEN durable_cluster) */
static bool announced = false;

static void beat_connect(const char *user_timeout);
static void beat_disconnect(void);
static void beat_service(void);
static TimestampTz beat_due(void);
static PGresult *await_result(PGconn *conn, bool sent, const char *sql, int timeout_ms);
static PGresult *await_results(PGconn *conn, bool sent, const char *sql, int timeout_ms,
							   bool pipeline, bool *first_ok);

/* A connection-string value, quoted: 'it''s' is written 'it\'s'. */
static void
append_conninfo_value(StringInfo buf, const char *keyword, const char *value)
{
	appendStringInfo(buf, "%s='", keyword);
	for (const char *p = value; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoString(buf, "' ");
}

/*
 * How to reach the store: durable_cluster.store if set (a connection
 * string or URI, which may name its own user), otherwise this server
 * through its first Unix socket (or localhost), as dc_cluster.
 */
void
dc_store_init(const char *node_name, bool in_process)
{
	StringInfoData info;
	char	   *host;
	char	   *comma;

	initStringInfo(&info);
	if (!dc_store_is_here())
		appendStringInfoString(&info, dc_store);
	else
	{
		host = pstrdup(Unix_socket_directories ? Unix_socket_directories : "");
		if ((comma = strchr(host, ',')) != NULL)
			*comma = '\0';
		host = pstrdup(host + strspn(host, " "));
		if (host[0] == '\0')
			host = "localhost";
		append_conninfo_value(&info, "host", host);
		appendStringInfo(&info, "port=%d ", PostPortNumber);
		append_conninfo_value(&info, "dbname", dc_database);
		append_conninfo_value(&info, "user", DC_CLUSTER_ROLE);
	}
	store_conninfo = MemoryContextStrdup(TopMemoryContext, info.data);
	store_application_name = MemoryContextStrdup(TopMemoryContext,
												 psprintf("durable_cluster %s", node_name));
	pfree(info.data);
	if (in_process)
		transport = &dc_local_transport;
}

static void
store_disconnect(void)
{
	if (store_wait)
		FreeWaitEventSet(store_wait);
	store_wait = NULL;
	if (store_conn)
		PQfinish(store_conn);
	store_conn = NULL;
	beat_disconnect();
	n_prepared = 0;
	batch_types_known = false;
	listening = false;
}

/*
 * Does dc_cluster exist on this server?  pg_authid is a shared catalog,
 * which the node's own connection reads.
 */
static bool
cluster_role_exists(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		exists;

	StartTransactionCommand();
	exists = OidIsValid(get_role_oid(DC_CLUSTER_ROLE, true));
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return exists;
}

/*
 * Does durable_cluster.database exist?  pg_database is a shared catalog,
 * which a node connected to no database reads too, but without its
 * indexes (they would need pg_class): by a scan of the table.
 */
static bool
store_database_exists(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	bool		exists;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(dc_database));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	exists = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return exists;
}

/*
 * Tell this server's workers that log in as dc_cluster (the saga worker,
 * nodes that write the store in process), which wait for it, once that
 * role exists here (CREATE EXTENSION made it) and so does the database
 * they log in to.  A node checks at every tick until then.
 */
void
dc_store_note_cluster_role(void)
{
	if (dc_shared->cluster_role_ready || !cluster_role_exists() || !store_database_exists())
		return;
	dc_mark_cluster_role_ready();
}

/*
 * Connect to the store, without blocking, for at most twice failure_timeout
 * (a connection takes a few round trips, and a link whose round trips take
 * half of failure_timeout is slow, not dead).
 */
static void
connect_store(void)
{
	char	   *user_timeout = psprintf("%d", dc_failure_timeout_ms);

	store_disconnect();

	/* until CREATE EXTENSION made the role, wait without failed logins */
	if (dc_store_is_here() && !cluster_role_exists())
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("role \"%s\" does not exist yet; CREATE EXTENSION durable_cluster creates it",
					   DC_CLUSTER_ROLE));

	/*
	 * The session is always named after the node, and a store that stops
	 * answering is given up after failure_timeout: by then this node is
	 * failed over anyway.
	 */
	store_conn = dc_connect((const char *[]) {"dbname", "application_name",
											  "tcp_user_timeout", "options", NULL},
							(const char *[]) {store_conninfo, store_application_name,
											  user_timeout,
											  dc_cluster_session_options(true), NULL},
							true,
							TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														2 * dc_failure_timeout_ms));
	if (store_conn == NULL || PQstatus(store_conn) != CONNECTION_OK)
	{
		char	   *msg = store_conn ? dc_libpq_error(store_conn) : "timed out";

		store_disconnect();
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("could not connect to the durable_cluster store: %s", msg));
	}

	if (!dc_store_is_here())
		beat_connect(user_timeout);

	/* WaitLatchOrSocket would build and tear down an epoll set per wait */
	store_wait = dc_create_wait_event_set(3);
	AddWaitEventToSet(store_wait, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(store_wait, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(store_wait, WL_SOCKET_READABLE, PQsocket(store_conn), NULL, NULL);
}

static PGconn *
connection(void)
{
	if (store_conn == NULL || PQstatus(store_conn) != CONNECTION_OK)
		connect_store();

	/*
	 * On this server, announcements set the nodes' latches at commit
	 * (durable_cluster.wake_nodes_at_commit); from another server they come
	 * as notifications.  Whatever was announced while not listening is
	 * caught up by the tick that follows.
	 */
	if (!dc_store_is_here() && !listening)
	{
		PQclear(await_result(store_conn, PQsendQuery(store_conn, "LISTEN durable_cluster"),
							 "LISTEN durable_cluster", dc_failure_timeout_ms));
		listening = true;
		announced = true;
	}
	return store_conn;
}


/* Note the notifications that came with a result or while idle. */
static void
drain_notifications(PGconn *conn)
{
	PGnotify   *notify;

	while ((notify = PQnotifies(conn)) != NULL)
	{
		announced = true;
		PQfreemem(notify);
	}
}

/*
 * For a store on another server, the socket to wait on between
 * statements, where its announcements arrive; PGINVALID_SOCKET otherwise.
 */
static pgsocket
dc_store_listen_socket(void)
{
	if (dc_store_is_here() || store_conn == NULL || PQstatus(store_conn) != CONNECTION_OK)
		return PGINVALID_SOCKET;
	return PQsocket(store_conn);
}

/*
 * Wait, between batches, for the latch or timeout_ms, and for a store on
 * another server also for its announcements; with the connection's
 * persistent wait event set or WaitLatch's, not one made per wait.
 */
void
dc_store_wait_idle(long timeout_ms)
{
	WaitEvent	event;
	TimestampTz due;

	/* the heartbeat session's heartbeats go out while idle too */
	beat_service();
	due = beat_due();
	if (due != 0)
		timeout_ms = Min(timeout_ms,
						 Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due), 1));

	if (dc_store_listen_socket() != PGINVALID_SOCKET)
		(void) WaitEventSetWait(store_wait, timeout_ms, &event, 1, PG_WAIT_EXTENSION);
	else
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * Has the store announced a change since the last call?  Reads what
 * arrived on an idle connection to a store on another server; a connection
 * found broken counts as news (the next tick connects again).
 */
bool
dc_store_announced(void)
{
	bool		result;

	if (dc_store_listen_socket() != PGINVALID_SOCKET)
	{
		if (PQconsumeInput(store_conn))
			drain_notifications(store_conn);
		else
		{
			store_disconnect();
			announced = true;
		}
	}
	result = announced;
	announced = false;
	return result;
}

/*
 * Wait for the result of what was just sent, without blocking signals or
 * latch wake-ups, and return it.  The caller must PQclear the result.
 *
 * Every wait has a deadline, timeout_ms from now.  The store's own
 * statement_timeout should end the statement first; if it did not (a
 * registered handler that catches the cancel, a store that stopped
 * answering), the node drops the connection, which ends the statement's
 * backend (client_connection_check_interval) and every lock it held, and
 * gets back to its heartbeats.
 */
static PGresult *
await_result(PGconn *conn, bool sent, const char *sql, int timeout_ms)
{
	return await_results(conn, sent, sql, timeout_ms, false, NULL);
}

/* Wait until a result can be read without blocking, or raise at deadline. */
static void
wait_ready(PGconn *conn, TimestampTz deadline, const char *sql, int timeout_ms)
{
	DcPqWait	waited;

	/* the heartbeat session's heartbeats go out while this waits */
	for (;;)
	{
		TimestampTz due = beat_due();

		if (due == 0 || due >= deadline)
		{
			waited = dc_pq_await(conn, store_wait, deadline, false);
			break;
		}
		waited = dc_pq_await(conn, store_wait, due, false);
		if (waited != DC_PQ_TIMED_OUT)
			break;
		beat_service();
	}

	switch (waited)
	{
		case DC_PQ_READY:
			break;
		case DC_PQ_TIMED_OUT:
			store_disconnect();
			ereport(ERROR,
					errcode(ERRCODE_CONNECTION_FAILURE),
					errmsg("the durable_cluster store did not answer within %d ms; the node dropped its connection",
						   timeout_ms),
					errcontext("durable_cluster store statement: %s", sql));
			break;
		case DC_PQ_LOST:
			{
				char	   *msg = dc_libpq_error(conn);

				store_disconnect();
				ereport(ERROR,
						errcode(ERRCODE_CONNECTION_FAILURE),
						errmsg("lost the connection to the durable_cluster store: %s", msg));
			}
			break;
	}
}

/*
 * await_result, or, with pipeline, the results of a pipeline of several
 * statements ended by a sync (run(): a Prepare and its first Execute):
 * read to the sync and leave pipeline mode.  Then the last result is
 * returned, or the first error; *first_ok says whether the first
 * statement succeeded.
 */
static PGresult *
await_results(PGconn *conn, bool sent, const char *sql, int timeout_ms, bool pipeline,
			  bool *first_ok)
{
	PGresult   *res = NULL;
	PGresult   *next;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	int			nresults = 0;

	if (!sent)
	{
		char	   *msg = dc_libpq_error(conn);

		store_disconnect();
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("could not send to the durable_cluster store: %s", msg));
	}

	/*
	 * One result per statement sent; read to the end so the connection is
	 * idle.  The first is returned (the last in a pipeline), or the first
	 * error if one failed.
	 */
	for (;;)
	{
		bool		failed;

		wait_ready(conn, deadline, sql, timeout_ms);
		next = PQgetResult(conn);
		if (next == NULL)
		{
			if (pipeline)
				continue;		/* the end of one statement's results */
			break;
		}
		if (PQresultStatus(next) == PGRES_PIPELINE_SYNC)
		{
			PQclear(next);
			break;
		}
		failed = PQresultStatus(next) != PGRES_TUPLES_OK &&
			PQresultStatus(next) != PGRES_COMMAND_OK;
		if (nresults++ == 0 && first_ok)
			*first_ok = !failed;
		if (res == NULL || (failed && PQresultStatus(res) != PGRES_FATAL_ERROR) ||
			(pipeline && PQresultStatus(res) != PGRES_FATAL_ERROR &&
			 PQresultStatus(next) != PGRES_PIPELINE_ABORTED))
		{
			PQclear(res);
			res = next;
		}
		else
			PQclear(next);
	}
	if (pipeline && !PQexitPipelineMode(conn))
	{
		PQclear(res);
		store_disconnect();
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("could not leave pipeline mode on the durable_cluster store connection"));
	}
	if (res == NULL)
	{
		store_disconnect();
		ereport(ERROR,
				errcode(ERRCODE_CONNECTION_FAILURE),
				errmsg("no result from the durable_cluster store"));
	}
	drain_notifications(conn);
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		dc_raise_result_error(res, dc_libpq_error(store_conn),
							  psprintf("durable_cluster store statement: %s", sql));
	return res;
}

static char *
int8_text(int64 v)
{
	return psprintf(INT64_FORMAT, v);
}

/* ---- heartbeats that ride along ---- */

/*
 * A node's heartbeat must not wait behind its other statements: a tick
 * sends several one after another, and a batch two, so over a slow link
 * the heartbeats of a busy node would be many round trips apart, and a
 * node that is only slow would be marked down.  So every statement a
 * member sends refreshes its heartbeat too, in the same round trip, when
 * one is due: the statement is prepared behind
 *
 *	 WITH heartbeat AS (UPDATE members SET last_heartbeat = clock_timestamp()
 *						 WHERE name = <name> AND incarnation = <inc>
 *						   AND status = 'up')
 *
 * When none is due, the statement goes without it (prepared a second
 * time): an UPDATE that writes nothing still costs the store an executor
 * set-up on every batch, a good part of a small batch's cost.  One is due HEARTBEAT_EVERY_MS
 * after the last one sent; so consecutive heartbeats reach the store at
 * most that plus one round trip apart, and a node survives a round trip
 * of up to failure_timeout - HEARTBEAT_EVERY_MS (docs/operations.md).  A
 * node whose store is on another server sends them on a session of their
 * own instead, which does not wait for any statement (below).
 */
#define HEARTBEAT_EVERY_MS	Min(dc_heartbeat_interval_ms, dc_failure_timeout_ms / 4)

/* the Prepare of the pipeline run() sent last succeeded (read after an error too) */
static bool pipeline_prepare_ok = false;

static char member_name[NAMEDATALEN];
static int64 member_incarnation = 0;	/* 0: not a member, nothing to refresh */
static TimestampTz heartbeat_sent = 0;

/* The member whose heartbeat this node's statements refresh. */
void
dc_store_set_member(const char *name, int64 incarnation)
{
	strlcpy(member_name, name, sizeof(member_name));
	member_incarnation = incarnation;
	heartbeat_sent = 0;
}

/*
 * The heartbeat session of a node whose store is on another server.
 *
 * Riding along, a heartbeat still waits for the statement before it: over
 * a slow link a batch of two round trips, or a tick of several, holds it
 * back by as many.  So such a node keeps a second session to the store for
 * its heartbeats alone, in pipeline mode: while the node waits for any
 * statement of its store session (wait_ready), and before it sends one, a
 * heartbeat goes out on it once one is due, without waiting for the
 * earlier ones to come back.  Heartbeats then reach the store
 * HEARTBEAT_EVERY_MS apart however long a batch takes, late by the link's
 * one-way delay only, and the store session's statements carry none.  The
 * session is opened with the store session and closed with it; while it
 * is missing (it could not connect, or broke), heartbeats ride along as
 * before.  Its results only say that the heartbeats arrived: whether this
 * node is still a member, the tick's own heartbeat tells.
 */
/* enough in flight for a round trip of half of failure_timeout */
#define MAX_BEATS_IN_FLIGHT \
	Max(4, dc_failure_timeout_ms / 2 / Max(HEARTBEAT_EVERY_MS, 1) + 2)

static PGconn *beat_conn = NULL;
static int	beats_in_flight = 0;

static void
beat_connect(const char *user_timeout)
{
	beat_conn = dc_connect((const char *[]) {"dbname", "application_name",
											 "tcp_user_timeout", "options", NULL},
						   (const char *[]) {store_conninfo,
											 psprintf("%s heartbeat", store_application_name),
											 user_timeout,
											 dc_cluster_session_options(true), NULL},
						   true,
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   2 * dc_failure_timeout_ms));
	if (beat_conn == NULL || PQstatus(beat_conn) != CONNECTION_OK ||
		PQsetnonblocking(beat_conn, 1) != 0 || !PQenterPipelineMode(beat_conn))
	{
		ereport(LOG,
				errmsg("durable_cluster could not open the heartbeat session to the store: %s; heartbeats go with the node's statements",
					   beat_conn ? dc_libpq_error(beat_conn) : "timed out"));
		beat_disconnect();
	}
}

static void
beat_disconnect(void)
{
	if (beat_conn)
		PQfinish(beat_conn);
	beat_conn = NULL;
	beats_in_flight = 0;
}

/* The heartbeat session failed: say why, and let heartbeats ride along. */
static void
beat_lost(void)
{
	ereport(LOG,
			errmsg("durable_cluster lost the heartbeat session to the store: %s; heartbeats go with the node's statements",
				   dc_libpq_error(beat_conn)));
	beat_disconnect();
}

/* When the heartbeat session sends the next heartbeat; 0: it does not. */
static TimestampTz
beat_due(void)
{
	if (beat_conn == NULL || member_incarnation == 0)
		return 0;
	return TimestampTzPlusMilliseconds(heartbeat_sent, HEARTBEAT_EVERY_MS);
}

/*
 * Read what came back on the heartbeat session, and send a heartbeat if
 * one is due and not too many are unanswered (a store that stopped
 * answering: the store session finds that out).
 */
static void
beat_service(void)
{
	const char *values[2];
	int			nulls = 0;

	if (beat_conn == NULL)
		return;
	if (PQflush(beat_conn) < 0 || !PQconsumeInput(beat_conn))
	{
		beat_lost();
		return;
	}
	/* per heartbeat: its result, the end of its results, its sync */
	while (beats_in_flight > 0 && !PQisBusy(beat_conn))
	{
		PGresult   *res = PQgetResult(beat_conn);

		if (res == NULL)
		{
			if (++nulls > 1)
				break;
			continue;
		}
		nulls = 0;
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC)
			beats_in_flight--;
		PQclear(res);
	}

	if (beat_due() == 0 || GetCurrentTimestamp() < beat_due() ||
		beats_in_flight >= MAX_BEATS_IN_FLIGHT)
		return;
	values[0] = member_name;
	values[1] = int8_text(member_incarnation);
	if (!PQsendQueryParams(beat_conn,
						   "UPDATE durable_cluster.members SET last_heartbeat = clock_timestamp()"
						   " WHERE name = $1 AND incarnation = $2::bigint AND status = 'up'",
						   2, NULL, values, NULL, NULL, 0) ||
		!PQpipelineSync(beat_conn) || PQflush(beat_conn) < 0)
	{
		beat_lost();
		return;
	}
	beats_in_flight++;
	heartbeat_sent = GetCurrentTimestamp();
}

/*
 * Run one statement, waiting at most timeout_ms for it; with refresh, it
 * carries the heartbeat (above).  Parameters are text, or as lengths and
 * formats say (NULL: all text).  Each statement text (they are all string
 * constants of this file) is prepared once per connection, so the store
 * parses and plans it once, not on every call.
 */
static PGresult *
run(const char *sql, int nparams, const char *const *values, const int *lengths,
	const int *formats, int timeout_ms, bool refresh)
{
	PGconn	   *conn = connection();
	int			i;
	char		name[16];
	const char *const *all = values;
	int			nsent;

	/*
	 * Not due, or sent on the heartbeat session (below): the statement as
	 * it is (a second prepared form).
	 */
	beat_service();
	if (refresh && beat_conn != NULL)
		refresh = false;
	if (refresh)
	{
		TimestampTz now = GetCurrentTimestamp();

		refresh = member_incarnation > 0 &&
			now >= TimestampTzPlusMilliseconds(heartbeat_sent, HEARTBEAT_EVERY_MS);
		if (refresh)
		{
			const char **extended = palloc(sizeof(char *) * (nparams + 2));

			if (nparams > 0)
				memcpy(extended, values, sizeof(char *) * nparams);
			extended[nparams] = member_name;
			extended[nparams + 1] = int8_text(member_incarnation);
			all = extended;
			if (formats)
			{
				int		   *f = palloc0(sizeof(int) * (nparams + 2));
				int		   *l = palloc0(sizeof(int) * (nparams + 2));

				memcpy(f, formats, sizeof(int) * nparams);
				memcpy(l, lengths, sizeof(int) * nparams);
				formats = f;
				lengths = l;
			}
			heartbeat_sent = now;
		}
	}
	nsent = nparams + (refresh ? 2 : 0);

	for (i = 0; i < n_prepared && (prepared[i] != sql || prepared_refresh[i] != refresh); i++)
		;
	snprintf(name, sizeof(name), "dc_%d", i);
	if (i == n_prepared)
	{
		const char *text = sql;
		PGresult   *res = NULL;

		if (n_prepared == MAX_PREPARED)
			elog(ERROR, "durable_cluster: more than %d store statements", MAX_PREPARED);
		if (refresh)
			text = psprintf("WITH heartbeat AS ("
							"UPDATE durable_cluster.members SET last_heartbeat = clock_timestamp()"
							" WHERE name = $%d AND incarnation = $%d::bigint"
							"   AND status = 'up') %s",
							nparams + 1, nparams + 2, sql);

		/*
		 * The Prepare and the first Execute in one round trip (a pipeline):
		 * over a slow link a round trip more would hold the heartbeat back.
		 */
		pipeline_prepare_ok = false;
		PG_TRY();
		{
			res = await_results(conn,
								PQenterPipelineMode(conn) &&
								PQsendPrepare(conn, name, text, nsent, NULL) &&
								PQsendQueryPrepared(conn, name, nsent, all, lengths, formats, 0) &&
								PQpipelineSync(conn),
								sql, timeout_ms, true, &pipeline_prepare_ok);
		}
		PG_FINALLY();
		{
			/* prepared there even if the Execute failed, unless disconnected */
			if (store_conn == conn && n_prepared == i && pipeline_prepare_ok)
			{
				prepared_refresh[n_prepared] = refresh;
				prepared[n_prepared++] = sql;
			}
		}
		PG_END_TRY();
		return res;
	}
	return await_result(conn,
						PQsendQueryPrepared(conn, name, nsent, all, lengths, formats, 0),
						sql, timeout_ms);
}

/*
 * A member's statement, carrying its heartbeat, waiting at most timeout_ms.
 */
static PGresult *
exec_within(const char *sql, int nparams, const char *const *values, int timeout_ms)
{
	return run(sql, nparams, values, NULL, NULL, timeout_ms, true);
}

/*
 * The same, waiting as long as the store session's statement_timeout
 * (failure_timeout): past it, the node is failed over anyway.
 */
static PGresult *
exec(const char *sql, int nparams, const char *const *values)
{
	return run(sql, nparams, values, NULL, NULL, dc_failure_timeout_ms, true);
}

/* A statement that does not carry the heartbeat (membership changes). */
static PGresult *
exec_plain(const char *sql, int nparams, const char *const *values)
{
	return run(sql, nparams, values, NULL, NULL, dc_failure_timeout_ms, false);
}

/*
 * A value the store must have (a count, an id, a version): an integer, or
 * a clear error naming what is missing or wrong.  A store edited by hand
 * must give an error in the log and a node that waits, never a crash.
 */
static int64
store_int(const char *value, const char *what, int64 min, int64 max)
{
	int64		v;

	if (value == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("the durable_cluster store has no %s", what),
				errhint("Check durable_cluster.settings and durable_cluster.members in the store; the node waits until they are right."));
	v = pg_strtoint64(value);
	if (v < min || v > max)
		ereport(ERROR,
				errcode(ERRCODE_DATA_CORRUPTED),
				errmsg("the durable_cluster store has %s " INT64_FORMAT ", out of the range " INT64_FORMAT " to " INT64_FORMAT,
					   what, v, min, max));
	return v;
}

/* The first column of a result's first row, or NULL; frees the result. */
static char *
first_value(PGresult *res)
{
	char	   *value = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

/* Run a statement and return the first column of its first row, or NULL. */
static char *
exec_value(const char *sql, int nparams, const char *const *values)
{
	return first_value(exec(sql, nparams, values));
}

static char *
exec_plain_value(const char *sql, int nparams, const char *const *values)
{
	return first_value(exec_plain(sql, nparams, values));
}

/*
 * The extension in the store: its pg_extension oid (InvalidOid when it is
 * not there) and, in *version, its installed version (palloc'd; NULL then).
 */
Oid
dc_store_extension(char **version)
{
	static const char *const sql = "SELECT oid, extversion FROM pg_catalog.pg_extension "
		" WHERE extname = 'durable_cluster'";
	PGresult   *volatile res = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	Oid			oid = InvalidOid;

	*version = NULL;
	/* no role yet: CREATE EXTENSION has not run, wait without a word */
	if (store_conn == NULL && dc_store_is_here() && !cluster_role_exists())
		return InvalidOid;

	/*
	 * With the heartbeat: this is the tick's first statement, and a round
	 * trip without one between two that carry it would put them two round
	 * trips apart.  The heartbeat names the extension's table; when that is
	 * gone (DROP EXTENSION), ask again without it.
	 */
	PG_TRY();
	{
		res = exec(sql, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNDEFINED_TABLE &&
			edata->sqlerrcode != ERRCODE_INVALID_SCHEMA_NAME)
			PG_RE_THROW();
		FlushErrorState();
	}
	PG_END_TRY();
	if (res == NULL)
		res = exec_plain(sql, 0, NULL);

	if (PQntuples(res) > 0)
	{
		oid = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
		*version = pstrdup(PQgetvalue(res, 0, 1));
	}
	PQclear(res);

	/*
	 * Statements prepared for the extension that went away keep the types
	 * of their parameters, which may be its own (a batch's): start afresh.
	 */
	if (OidIsValid(store_extension) && oid != store_extension)
		store_disconnect();
	store_extension = oid;
	return oid;
}

/* Client sessions of the store other than the nodes' own. */
int
dc_store_other_sessions(void)
{
	/* dc_cluster does not see other roles' sessions: a function does */
	return (int) store_int(exec_value("SELECT durable_cluster.other_client_sessions()", 0, NULL),
						   "count of sessions", 0, PG_INT32_MAX);
}


int64
dc_store_join(const char *name, int node_index, const char *address, const char *roles)
{
	const char *values[5] = {name, psprintf("%d", node_index), address,
	psprintf("%d", MyProcPid), roles};

	return store_int(exec_plain_value("SELECT durable_cluster.node_join($1, $2, $3, $4, $5)",
									  5, values),
					 "incarnation for this node", 1, PG_INT64_MAX);
}

/* false when this incarnation is no longer an up member */
bool
dc_store_heartbeat(const char *name, int64 incarnation)
{
	const char *values[2] = {name, int8_text(incarnation)};
	PGresult   *res;
	bool		alive;

	/* (the heartbeat session, if there is one, keeps its own pace) */
	if (beat_conn == NULL)
		heartbeat_sent = GetCurrentTimestamp();
	res = exec_plain("UPDATE durable_cluster.members SET last_heartbeat = clock_timestamp() "
					 " WHERE name = $1 AND incarnation = $2 AND status = 'up'",
					 2, values);
	alive = strcmp(PQcmdTuples(res), "1") == 0;

	PQclear(res);
	return alive;
}

void
dc_store_leaving(const char *name, int64 incarnation)
{
	const char *values[2] = {name, int8_text(incarnation)};

	PQclear(exec_plain("SELECT durable_cluster.node_leaving($1, $2)", 2, values));
}

void
dc_store_leave(const char *name, int64 incarnation)
{
	const char *values[3] = {name, int8_text(incarnation),
	psprintf("%d", dc_failure_timeout_ms)};

	PQclear(exec_plain("SELECT durable_cluster.node_leave($1, $2, $3)", 3, values));
}

/*
 * Reconcile membership and shard map, telling the store which nodes run on
 * this server (see durable_cluster.reconcile).
 */
void
dc_store_reconcile(void)
{
	JsonbParseState *ps = NULL;
	const char *values[5];
	char		names[DC_MAX_NODES][NAMEDATALEN];
	int			n = dc_node_names(names, true);

	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
		dc_push_string(&ps, NULL, names[i]);
	values[0] = psprintf("%d", dc_failure_timeout_ms);
	values[1] = dc_self_address();
	values[2] = dc_jsonb_text(pushJsonbValue(&ps, WJB_END_ARRAY, NULL));
	/*
	 * reconcile() refreshes this member's heartbeat itself: the heartbeat
	 * of exec() would update the row that reconcile may update too, in one
	 * command, which is an error.
	 */
	values[3] = member_name;
	values[4] = int8_text(member_incarnation);
	PQclear(exec_plain("SELECT durable_cluster.reconcile($1, $2, $3, $4, $5)", 5, values));
}

/*
 * Copy the shard map into shared memory if the store holds a newer one
 * than shared memory does.  Returns true if shared memory changed.
 */
bool
dc_store_refresh_map(Oid extension)
{
	PGresult   *res;
	int64		version;
	int			nshards;
	int16	   *owner;
	int64	   *epoch;
	char		(*remote)[DC_ADDRESS_BYTES];
	int			nremote = 0;
	bool		changed;

	version = store_int(exec_value("SELECT map_version FROM durable_cluster.settings",
								   0, NULL),
						"settings row (map_version)", 0, PG_INT64_MAX);
	if (!dc_map_older_than(extension, version))
		return false;

	/* one statement, so version and map come from one snapshot */
	res = exec("SELECT st.map_version, st.number_of_shards, s.shard_id, m.node_index, s.epoch, "
			   "       m.address "
			   "  FROM durable_cluster.settings st "
			   " CROSS JOIN durable_cluster.shards s "
			   "  LEFT JOIN durable_cluster.members m ON m.name = s.node AND m.status = 'up'",
			   0, NULL);
	if (PQntuples(res) == 0)
	{
		PQclear(res);
		return false;
	}
	/* a value found wrong raises an error: the result is freed all the same */
	PG_TRY();
	{
		version = store_int(PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0),
							"settings row (map_version)", 0, PG_INT64_MAX);
		nshards = (int) store_int(PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1),
								  "number_of_shards", 1, DC_MAX_SHARDS);
		owner = palloc(sizeof(int16) * nshards);
		epoch = palloc0(sizeof(int64) * nshards);
		remote = palloc(DC_MAX_REMOTE_SERVERS * DC_ADDRESS_BYTES);
		for (int i = 0; i < nshards; i++)
			owner[i] = DC_OWNER_NONE;
		for (int r = 0; r < PQntuples(res); r++)
		{
			int			shard = (int) store_int(PQgetvalue(res, r, 2), "shard_id",
												PG_INT32_MIN, PG_INT32_MAX);

			/* shards outside the map are ignored, as are members beyond our slots */
			if (shard < 0 || shard >= nshards)
				continue;
			owner[shard] = PQgetisnull(res, r, 3) ? DC_OWNER_NONE
				: dc_map_owner_code(PQgetvalue(res, r, 5),
									(int) store_int(PQgetvalue(res, r, 3), "node_index", 0,
													DC_MAX_NODES - 1),
									remote, &nremote);
			epoch[shard] = store_int(PQgetvalue(res, r, 4), "shard epoch", 0, PG_INT64_MAX);
		}
	}
	PG_FINALLY();
	{
		PQclear(res);
	}
	PG_END_TRY();

	changed = dc_map_install(extension, version, nshards, owner, epoch, remote, nremote);

	pfree(owner);
	pfree(epoch);
	pfree(remote);
	return changed;
}

/*
 * The parameters of a batch statement.  Its arrays and records go in
 * binary form, as array_recv() and record_recv() read them: the store then
 * reads each value by its length instead of scanning (and the node
 * escaping) every byte of the entities' documents, which cost the store a
 * sixth of its time in text form.
 */
#define MAX_BATCH_PARAMS	5

typedef struct BatchParams
{
	int			n;
	StringInfoData values[MAX_BATCH_PARAMS];	/* text with its NUL, or binary */
	bool		binary[MAX_BATCH_PARAMS];
} BatchParams;

/* The next parameter, to be written into the buffer returned. */
static StringInfo
param_next(BatchParams *p, bool binary)
{
	StringInfo	buf = &p->values[p->n];

	Assert(p->n < MAX_BATCH_PARAMS);
	initStringInfo(buf);
	p->binary[p->n++] = binary;
	return buf;
}

/* A batch statement, carrying the heartbeat. */
static PGresult *
exec_batch(const char *sql, const BatchParams *p)
{
	const char *values[MAX_BATCH_PARAMS];
	int			lengths[MAX_BATCH_PARAMS];
	int			formats[MAX_BATCH_PARAMS];

	for (int i = 0; i < p->n; i++)
	{
		values[i] = p->values[i].data;
		lengths[i] = p->values[i].len;
		formats[i] = p->binary[i] ? 1 : 0;
	}
	return run(sql, p->n, values, lengths, formats, dc_failure_timeout_ms, true);
}

/* ---- values in binary form ---- */

static void
put_uint32(StringInfo buf, uint32 value)
{
	uint32		n = pg_hton32(value);

	appendBinaryStringInfo(buf, (char *) &n, sizeof(n));
}

/* The length word of a value, patched by end_value once it is written. */
static int
begin_value(StringInfo buf)
{
	int			at = buf->len;

	put_uint32(buf, 0);
	return at;
}

static void
end_value(StringInfo buf, int at)
{
	uint32		len = pg_hton32(buf->len - at - sizeof(uint32));

	memcpy(buf->data + at, &len, sizeof(len));
}

static void
value_text(StringInfo buf, const char *value)
{
	int			len = strlen(value);

	put_uint32(buf, len);
	appendBinaryStringInfo(buf, value, len);
}

static void
value_int4(StringInfo buf, int32 value)
{
	put_uint32(buf, sizeof(value));
	put_uint32(buf, (uint32) value);
}

static void
value_int8(StringInfo buf, int64 value)
{
	uint64		v = pg_hton64((uint64) value);

	put_uint32(buf, sizeof(v));
	appendBinaryStringInfo(buf, (char *) &v, sizeof(v));
}

/* jsonb_recv's form: a version byte, then the document as text */
static void
value_jsonb(StringInfo buf, Jsonb *doc)
{
	int			at = begin_value(buf);

	appendStringInfoChar(buf, 1);
	(void) JsonbToCString(buf, &doc->root, VARSIZE(doc));
	end_value(buf, at);
}

/* An array of n values of type, none NULL: they follow, each as a value. */
static void
array_header(StringInfo buf, Oid type, int n)
{
	put_uint32(buf, 1);			/* dimensions */
	put_uint32(buf, 0);			/* no NULLs */
	put_uint32(buf, type);
	put_uint32(buf, n);
	put_uint32(buf, 1);			/* lower bound */
}

/*
 * A record is the number of its fields, then each field: its type and its
 * value.  Array fields and array elements that are records are values
 * too, framed by begin_value and end_value.
 */
#define field_type(buf, type)	put_uint32(buf, type)

static void
field_text(StringInfo buf, const char *value)
{
	field_type(buf, TEXTOID);
	value_text(buf, value);
}

static void
field_int4(StringInfo buf, int32 value)
{
	field_type(buf, INT4OID);
	value_int4(buf, value);
}

static void
field_int8(StringInfo buf, int64 value)
{
	field_type(buf, INT8OID);
	value_int8(buf, value);
}

static void
field_jsonb(StringInfo buf, Jsonb *doc)
{
	field_type(buf, JSONBOID);
	value_jsonb(buf, doc);
}

static const BatchTypes *
lookup_batch_types(void)
{
	PGresult   *res;
	Oid			oids[8];

	if (batch_types_known)
		return &batch_types;
	res = exec("SELECT t.oid, t.typarray"
			   "  FROM unnest(ARRAY['durable_cluster.batch_shard', 'durable_cluster.batch_entity',"
			   "                    'durable_cluster.batch_log_entry',"
			   "                    'durable_cluster.batch_saga_step']::pg_catalog.regtype[])"
			   "       WITH ORDINALITY AS u(type, ord)"
			   "  JOIN pg_catalog.pg_type t ON t.oid = u.type"
			   " ORDER BY u.ord", 0, NULL);
	if (PQntuples(res) != 4)
	{
		PQclear(res);
		elog(ERROR, "durable_cluster: the store lacks the types of a batch");
	}
	for (int r = 0; r < 4; r++)
	{
		oids[2 * r] = (Oid) strtoul(PQgetvalue(res, r, 0), NULL, 10);
		oids[2 * r + 1] = (Oid) strtoul(PQgetvalue(res, r, 1), NULL, 10);
	}
	PQclear(res);
	batch_types.shard = oids[0];
	batch_types.shard_array = oids[1];
	batch_types.entity = oids[2];
	batch_types.entity_array = oids[3];
	batch_types.log_entry = oids[4];
	batch_types.log_entry_array = oids[5];
	batch_types.saga_step = oids[6];
	batch_types.saga_step_array = oids[7];
	batch_types_known = true;
	return &batch_types;
}

/* ---- a batch's explicit transaction, for registered commands ---- */

static bool in_transaction = false;

/* Run a transaction control statement (not prepared: it has no plan). */
static void
exec_control(const char *sql)
{
	PGconn	   *conn = connection();

	PQclear(await_result(conn, PQsendQuery(conn, sql), sql, dc_failure_timeout_ms));
}

/*
 * Open the transaction a batch with registered commands runs in: their
 * handlers and then write_batch, committed together (dc_store_end_batch).
 *
 * Its statements may take no longer than command_timeout (a handler that
 * runs longer fails its command), and it may not stay idle longer than
 * failure_timeout: after write_batch it holds its shards' rows locked
 * until COMMIT, and a node paused in between would otherwise keep the
 * other nodes from taking them over.
 */
void
dc_store_begin_batch(void)
{
	Assert(!in_transaction);
	/* what the batch loaded in process is in memory: end that transaction */
	if (transport != &libpq_transport)
		transport->release_batch();
	exec_control(psprintf("BEGIN; SET LOCAL statement_timeout = %d; "
						  "SET LOCAL idle_in_transaction_session_timeout = %d",
						  dc_command_timeout_ms, dc_failure_timeout_ms));
	in_transaction = true;
}

/* Commit the batch's transaction, or roll it back. */
void
dc_store_end_batch(bool commit)
{
	Assert(in_transaction);
	in_transaction = false;
	exec_control(commit ? "COMMIT" : "ROLLBACK");
}

/*
 * After an error: a transaction left open on the store is given up with
 * the connection, which is surer than talking to a session in an unknown
 * state; the next call connects again.
 */
static void
libpq_release_batch(void)
{
	if (in_transaction)
		store_disconnect();
	in_transaction = false;
}

/*
 * Run a registered command's handler (durable_cluster.run_command) on
 * state.  Returns the new state; or NULL, with *sqlstate and *message set,
 * if the handler or the checks of what it returned raised an error, which
 * undid what the handler did.
 */
Jsonb *
dc_store_run_command(const DcCommand *cmd, Jsonb *state, int *sqlstate, char **message)
{
	const char *values[3];
	PGresult   *res;
	Jsonb	   *new_state = NULL;

	Assert(in_transaction);
	values[0] = cmd->name;
	values[1] = dc_jsonb_doc_text(state);
	values[2] = dc_jsonb_doc_text((Jsonb *) cmd->payload);
	/*
	 * A handler that ignores the store's cancel (it catches query_canceled)
	 * is cut off by the node, a little after command_timeout, and never
	 * later than half of failure_timeout, so the node heartbeats in time.
	 */
	res = exec_within("SELECT new_state, sqlstate, message "
					  "  FROM durable_cluster.run_command($1, $2, $3)", 3, values,
					  Max(Min(dc_command_timeout_ms + 500, dc_failure_timeout_ms / 2), 1));
	if (PQntuples(res) != 1)
		elog(ERROR, "durable_cluster.run_command returned %d rows", PQntuples(res));
	if (!PQgetisnull(res, 0, 0))
		new_state = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													   CStringGetDatum(PQgetvalue(res, 0, 0))));
	else
	{
		const char *code = PQgetvalue(res, 0, 1);

		*sqlstate = strlen(code) == 5
			? MAKE_SQLSTATE(code[0], code[1], code[2], code[3], code[4])
			: ERRCODE_INTERNAL_ERROR;
		*message = pstrdup(PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	return new_state;
}

/*
 * A batch with writes: durable_cluster.write_batch() (store_batch.c) locks
 * and checks the fence of its shards and writes its entities, in the
 * store's backend, in the transaction of this one statement.
 */
static const char write_batch_sql[] = "SELECT durable_cluster.write_batch($1)";

/*
 * A batch that only reads: the node's cached state is current if the store
 * still names it the owner of the shards at the epochs it holds, as of the
 * statement's snapshot.  A plain read, so the store writes nothing (no
 * lock, no WAL to flush) for it.
 */
static const char check_fence_sql[] =
"SELECT array_agg(f.shard_id ORDER BY f.shard_id)"
"  FROM unnest($2::durable_cluster.batch_shard[]) AS f"
" WHERE NOT EXISTS (SELECT FROM durable_cluster.shards s"
"                    WHERE s.shard_id = f.shard_id AND s.node = $1 AND s.epoch = f.epoch)";

/* The fence of a batch, as a durable_cluster.batch_shard[]. */
static void
fence_array(StringInfo buf, const BatchTypes *types, const DcBatchWrite *batch)
{
	array_header(buf, types->shard, batch->nshards);
	for (int i = 0; i < batch->nshards; i++)
	{
		int			row = begin_value(buf);

		put_uint32(buf, 2);
		field_int4(buf, batch->shards[i]);
		field_int8(buf, batch->epochs[i]);
		end_value(buf, row);
	}
}

/*
 * A batch as one durable_cluster.batch (see its type): node_name, fence,
 * entities, log, saga_steps.
 */
static void
batch_record(StringInfo buf, const BatchTypes *types, const char *name,
			 const DcBatchWrite *batch)
{
	int			at;

	put_uint32(buf, 5);
	field_text(buf, name);

	field_type(buf, types->shard_array);
	at = begin_value(buf);
	fence_array(buf, types, batch);
	end_value(buf, at);

	field_type(buf, types->entity_array);
	at = begin_value(buf);
	array_header(buf, types->entity, batch->nwrites);
	for (int i = 0; i < batch->nwrites; i++)
	{
		const DcEntityWrite *w = &batch->writes[i];
		int			row = begin_value(buf);

		put_uint32(buf, 6);
		field_text(buf, w->mall_id);
		field_text(buf, w->user_id);
		field_int4(buf, w->shard);
		field_jsonb(buf, w->state_doc);
		field_int8(buf, w->revision);
		field_int8(buf, w->old_revision);
		end_value(buf, row);
	}
	end_value(buf, at);

	field_type(buf, types->log_entry_array);
	at = begin_value(buf);
	array_header(buf, types->log_entry, batch->nlogs);
	for (int i = 0; i < batch->nlogs; i++)
	{
		const DcCommandLog *l = &batch->logs[i];
		int			row = begin_value(buf);

		put_uint32(buf, 5);
		field_text(buf, l->mall_id);
		field_text(buf, l->user_id);
		field_text(buf, l->command_id);
		field_jsonb(buf, l->reply);
		field_jsonb(buf, l->request);
		end_value(buf, row);
	}
	end_value(buf, at);

	field_type(buf, types->saga_step_array);
	at = begin_value(buf);
	array_header(buf, types->saga_step, batch->nsagas);
	for (int i = 0; i < batch->nsagas; i++)
	{
		int			row = begin_value(buf);

		put_uint32(buf, 2);
		field_jsonb(buf, batch->sagas[i].record);
		field_text(buf, batch->sagas[i].step);
		end_value(buf, row);
	}
	end_value(buf, at);
}

/*
 * Store a batch: check the fence of its shards, write its entities, log
 * the replies of its commands sent with a command_id and record the
 * transfer steps it applied, in one statement.  Returns the number of
 * shards found fenced, listed in fenced[]; if there are any, nothing was
 * written.
 */
static int
libpq_write_batch(const char *name, const DcBatchWrite *batch, int *fenced, int *held,
				  int *nheld)
{
	const BatchTypes *types = lookup_batch_types();
	BatchParams params = {0};
	char	   *result;
	char	   *p;
	int			nfenced = 0;

	/* in a batch's transaction, registered commands may have written: lock */
	if (batch->nwrites == 0 && batch->nlogs == 0 && batch->nsagas == 0 && !in_transaction)
	{
		appendStringInfoString(param_next(&params, false), name);
		fence_array(param_next(&params, true), types, batch);
		result = first_value(exec_batch(check_fence_sql, &params));
	}
	else
	{
		batch_record(param_next(&params, true), types, name, batch);
		result = first_value(exec_batch(write_batch_sql, &params));
	}

	/* an entity held by another transaction is an error over libpq */
	*nheld = 0;

	/* NULL, or an int4[] in text form: "{3,17}" */
	for (p = result ? result + 1 : NULL; p && *p && *p != '}'; p++)
	{
		fenced[nfenced++] = (int) strtol(p, &p, 10);
		if (*p != ',')
			break;
	}
	return nfenced;
}

/*
 * What a batch needs from the store, in one call of durable_cluster.
 * load_batch() (store_batch.c): the committed state of the entities in
 * loads[] (those never stored keep the initial state), and the logged
 * reply of each command in lookups[] (NULL if not logged).
 */
static void
libpq_load_batch(DcEntityLoad *loads, int nloads, DcCommandLog *lookups, int nlookups)
{
	BatchParams params = {0};
	StringInfo	mall_ids = param_next(&params, true);
	StringInfo	user_ids = param_next(&params, true);
	StringInfo	log_mall_ids = param_next(&params, true);
	StringInfo	log_user_ids = param_next(&params, true);
	StringInfo	command_ids = param_next(&params, true);
	PGresult   *res;

	array_header(mall_ids, TEXTOID, nloads);
	array_header(user_ids, TEXTOID, nloads);
	for (int i = 0; i < nloads; i++)
	{
		value_text(mall_ids, loads[i].mall_id);
		value_text(user_ids, loads[i].user_id);
		dc_entity_init(&loads[i].state);
		loads[i].held = false;
	}
	array_header(log_mall_ids, TEXTOID, nlookups);
	array_header(log_user_ids, TEXTOID, nlookups);
	array_header(command_ids, TEXTOID, nlookups);
	for (int i = 0; i < nlookups; i++)
	{
		value_text(log_mall_ids, lookups[i].mall_id);
		value_text(log_user_ids, lookups[i].user_id);
		value_text(command_ids, lookups[i].command_id);
		lookups[i].reply = lookups[i].request = NULL;
		lookups[i].held = false;
	}

	res = exec_batch("SELECT what, ord, doc, revision, request "
					 "  FROM durable_cluster.load_batch($1, $2, $3, $4, $5)", &params);
	/* a value found wrong raises an error: the result is freed all the same */
	PG_TRY();
	{
		for (int r = 0; r < PQntuples(res); r++)
		{
			bool		state = strcmp(PQgetvalue(res, r, 0), "state") == 0;
			int			i = pg_strtoint32(PQgetvalue(res, r, 1)) - 1;
			Jsonb	   *doc;

			if (i < 0 || i >= (state ? nloads : nlookups))
				continue;
			doc = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													 CStringGetDatum(PQgetvalue(res, r, 2))));
			if (state)
				dc_entity_from_jsonb(doc, pg_strtoint64(PQgetvalue(res, r, 3)), &loads[i].state);
			else if (PQgetisnull(res, r, 4))
				elog(ERROR, "command log entry without its request");
			else
			{
				lookups[i].reply = doc;
				lookups[i].request =
					DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
													   CStringGetDatum(PQgetvalue(res, r, 4))));
			}
		}
	}
	PG_FINALLY();
	{
		PQclear(res);
	}
	PG_END_TRY();
}

/*
 * The store session's commit waited for its flush (and standbys), and
 * load_batch() for the flush of what it read.
 */
static XLogRecPtr
libpq_durable_lsn(void)
{
	return InvalidXLogRecPtr;
}

static const DcStoreTransport libpq_transport = {
	.load_batch = libpq_load_batch,
	.write_batch = libpq_write_batch,
	.release_batch = libpq_release_batch,
	.durable_lsn = libpq_durable_lsn,
};

/*
 * What a batch needs from the store: the committed state of the entities
 * in loads[] (those never stored keep the initial state), and the logged
 * reply of each command in lookups[] (NULL if not logged).
 */
void
dc_store_load_batch(DcEntityLoad *loads, int nloads, DcCommandLog *lookups, int nlookups)
{
	transport->load_batch(loads, nloads, lookups, nlookups);
}

/*
 * Store a batch: check the fence of its shards, write its entities, log
 * the replies of its commands sent with a command_id and record the
 * transfer steps it applied, and commit.  Returns the number of shards
 * found fenced, listed in fenced[]; if there are any, or entities held by
 * another transaction (*nheld of them, rows of batch->writes, in held[]),
 * nothing was written.  A batch with registered commands is written in the
 * transaction of the store session its handlers ran in.
 */
int
dc_store_write_batch(const char *name, const DcBatchWrite *batch, int *fenced, int *held,
					 int *nheld)
{
	if (in_transaction)
		return libpq_write_batch(name, batch, fenced, held, nheld);
	return transport->write_batch(name, batch, fenced, held, nheld);
}

/*
 * Give up whatever the batch still holds, in either transport: after an
 * error, or once a batch ended without a write (see store_transport.h).
 */
void
dc_store_release_batch(void)
{
	libpq_release_batch();
	if (transport != &libpq_transport)
		transport->release_batch();
}

/*
 * Up to where the WAL must be durable before the replies of the batch just
 * ended are shown (store_transport.h).
 */
XLogRecPtr
dc_store_durable_lsn(void)
{
	return transport->durable_lsn();
}
