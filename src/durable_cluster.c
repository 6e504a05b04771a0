/*-------------------------------------------------------------------------
 *
 * durable_cluster.c
 *	  Module load: settings (GUCs), shared memory hooks, the static node
 *	  workers and the saga worker.
 *
 * Everything that needs shared memory or starts workers works only when
 * the library is in shared_preload_libraries; loaded any other way, the SQL
 * functions refuse to run and say how to fix it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <unistd.h>

#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/guc.h"

#include "durable_cluster.h"
#include "inbox.h"

PG_MODULE_MAGIC;

char	   *dc_database = NULL;
char	   *dc_store = NULL;
char	   *dc_advertise_address = NULL;
int			dc_nodes = 3;
int			dc_max_nodes = 16;
int			dc_ask_timeout_ms = 10000;
int			dc_heartbeat_interval_ms = 1000;
int			dc_failure_timeout_ms = 5000;
int			dc_command_timeout_ms = 1000;
int			dc_passivate_idle_after_ms = 30 * 60 * 1000;
int			dc_max_entities_per_node = 100000;
int			dc_at_commit_retention_ms = 24 * 60 * 60 * 1000;

bool		dc_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
dc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(dc_shmem_size());
	RequestNamedLWLockTranche("durable_cluster", 1);
}

static void
dc_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	dc_shmem_init();
}

/* host:port, short enough to name nodes by (node-N@host:port) */
static bool
check_advertise_address(char **newval, void **extra, GucSource source)
{
	const char *colon = strrchr(*newval, ':');

	if ((*newval)[0] == '\0')
		return true;
	if (strlen(*newval) > DC_MAX_ADDRESS_LEN)
	{
		GUC_check_errdetail("It is %zu bytes long; the limit is %d.",
							strlen(*newval), DC_MAX_ADDRESS_LEN);
		return false;
	}
	if (colon == NULL || colon == *newval || colon[1] == '\0' ||
		strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
		strspn(*newval, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/:") !=
		strlen(*newval))
	{
		GUC_check_errdetail("It must be host:port, such as 10.0.0.2:5432 or db2.example.com:5432 (a Unix socket directory may stand for the host; letters, digits and . - _ / only).");
		return false;
	}
	return true;
}

static void
define_settings(void)
{
	DefineCustomStringVariable("durable_cluster.database",
							   "Database whose durable_cluster extension the nodes serve.",
							   NULL,
							   &dc_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("durable_cluster.store",
							   "libpq connection string of the cluster store; empty means this server.",
							   "Node workers reach the store over libpq, this server included.",
							   &dc_store,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("durable_cluster.advertise_address",
							   "host:port at which the other servers of the cluster reach this one; empty for a cluster of one server.",
							   "Set on every server of a cluster of several: members are known by it, and commands for this server's nodes are forwarded to it.",
							   &dc_advertise_address,
							   "",
							   PGC_POSTMASTER,
							   0,
							   check_advertise_address, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.nodes",
							"Number of node workers started with the server.",
							NULL,
							&dc_nodes,
							3, 0, DC_MAX_NODES,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.max_nodes",
							"Most node workers that may run at once, static and added.",
							NULL,
							&dc_max_nodes,
							16, 1, DC_MAX_NODES,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.ask_timeout",
							"How long dc_send_command waits for a node's reply.",
							"Longer than failure_timeout plus two heartbeat_intervals, callers ride through a failover without errors.",
							&dc_ask_timeout_ms,
							10000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.heartbeat_interval",
							"How often a node writes its heartbeat and checks the shard map.",
							NULL,
							&dc_heartbeat_interval_ms,
							1000, 10, 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.failure_timeout",
							"Heartbeat age after which a node is marked down and loses its shards.",
							NULL,
							&dc_failure_timeout_ms,
							5000, 100, 60 * 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.command_timeout",
							"How long a registered command's handler may run.",
							"A handler still running then is cancelled and its command fails; a node never waits for one longer than half of failure_timeout.",
							&dc_command_timeout_ms,
							1000, 1, 60 * 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.passivate_idle_after",
							"How long an entity stays in its node's memory without a command; 0 keeps it.",
							"Passivation only frees memory: the state is stored already and is loaded again by the next command.",
							&dc_passivate_idle_after_ms,
							30 * 60 * 1000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.max_entities_per_node",
							"Most entities a node keeps in memory; past it, the least recently used leave.",
							NULL,
							&dc_max_entities_per_node,
							100000, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.at_commit_retention",
							"How long the outcome of a command sent with dc_send_command_at_commit is kept.",
							"dc_command_outcome() answers for it until then; the saga worker removes it afterwards.",
							&dc_at_commit_retention_ms,
							24 * 60 * 60 * 1000, 1000, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("durable_cluster");
}

void
dc_node_worker(BackgroundWorker *worker, int index)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* restarted one second after an exit with code 1, never after code 0 */
	worker->bgw_restart_time = 1;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "durable_cluster");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "dc_node_main");
	snprintf(worker->bgw_name, BGW_MAXLEN, "durable_cluster node %d", index + 1);
	snprintf(worker->bgw_type, BGW_MAXLEN, "durable_cluster node %d", index + 1);
	worker->bgw_main_arg = Int32GetDatum(index);
}

/*
 * The saga worker (saga.c) finishes transfers a failure interrupted.  It
 * connects to durable_cluster.database; should that not exist yet, it
 * fails and is started again a few seconds later.
 */
static void
register_saga_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "durable_cluster");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "dc_saga_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "durable_cluster sagas");
	snprintf(worker.bgw_type, BGW_MAXLEN, "durable_cluster sagas");
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	/*
	 * Loaded any other way, define nothing (PGC_POSTMASTER settings cannot be
	 * created after startup); dc_check_usable() explains the fix.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	dc_preloaded = true;
	define_settings();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = dc_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = dc_shmem_startup;

	if (!dc_store_is_here() && dc_advertise_address[0] == '\0')
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("durable_cluster.store is set but durable_cluster.advertise_address is not"),
				errdetail("In a cluster of several servers, every server is known to the others by its address, and its nodes are named after it."),
				errhint("Set durable_cluster.advertise_address to the host:port at which the other servers reach this one."));

	if (dc_nodes > dc_max_nodes)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("durable_cluster.nodes (%d) is larger than durable_cluster.max_nodes (%d)",
					   dc_nodes, dc_max_nodes),
				errhint("Raise durable_cluster.max_nodes or lower durable_cluster.nodes."));

	/*
	 * The postmaster only logs a worker it has no room for: say it loudly,
	 * as a server without its nodes or its saga worker does not serve
	 * commands or finish transfers.
	 */
	if (dc_nodes + 1 > max_worker_processes)
		ereport(WARNING,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("durable_cluster needs %d background workers (%d nodes and the saga worker), but max_worker_processes is %d",
					   dc_nodes + 1, dc_nodes, max_worker_processes),
				errdetail("Workers that do not fit are not started; dc_cluster_status() lists them as missing."),
				errhint("Raise max_worker_processes to at least %d (%d to add nodes up to durable_cluster.max_nodes), plus what parallel queries and other extensions use, and restart the server.",
						dc_nodes + 1, dc_max_nodes + 1));

	dc_check_timeouts();

	/* first: a server short of workers had better lose a node than it */
	register_saga_worker();
	for (int i = 0; i < dc_nodes; i++)
	{
		BackgroundWorker worker;

		dc_node_worker(&worker, i);
		RegisterBackgroundWorker(&worker);
	}
}

/*
 * Warn when the server's ask_timeout cannot ride through a failover: a
 * lost node's shards move after failure_timeout plus up to one
 * heartbeat_interval, and their new owner takes them at its next tick.
 * Callers waiting for them would get errors instead.  Checked at server
 * start and by the saga worker after each reload.
 */
void
dc_check_timeouts(void)
{
	int			failover_ms = dc_failure_timeout_ms + 2 * dc_heartbeat_interval_ms;

	if (dc_ask_timeout_ms <= failover_ms)
		ereport(WARNING,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("durable_cluster.ask_timeout (%d ms) is not longer than a failover (failure_timeout + 2 * heartbeat_interval = %d ms)",
					   dc_ask_timeout_ms, failover_ms),
				errdetail("Commands for a failed node's shards get errors instead of waiting for the new owner."),
				errhint("Set durable_cluster.ask_timeout above %d ms, or shorten failure_timeout.",
						failover_ms));
}

/*
 * Are all the cluster's nodes on this server?  Only when the store is
 * here and no address to be reached at was set.
 */
bool
dc_single_server(void)
{
	return dc_store_is_here() &&
		(dc_advertise_address == NULL || dc_advertise_address[0] == '\0');
}

/* Is the store this server (durable_cluster.store empty)? */
bool
dc_store_is_here(void)
{
	return dc_store == NULL || dc_store[0] == '\0';
}

void
dc_check_usable(void)
{
	static bool database_checked = false;

	if (!dc_preloaded || dc_shared == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("durable_cluster must be loaded via shared_preload_libraries"),
				errhint("Add durable_cluster to shared_preload_libraries in postgresql.conf and restart the server."));

	if (!database_checked)
	{
		char	   *here = get_database_name(MyDatabaseId);

		if (here == NULL || strcmp(here, dc_database) != 0)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("durable_cluster nodes serve database \"%s\", not \"%s\"",
						   dc_database, here ? here : "?"),
					errhint("Connect to \"%s\", or set durable_cluster.database = '%s' and restart the server.",
							dc_database, here ? here : "?"));
		database_checked = true;
	}

	/*
	 * On a server without nodes nobody else tells the saga worker that
	 * dc_cluster exists (CREATE EXTENSION made it); a command sent at
	 * commit here needs that worker.
	 */
	if (!dc_shared->cluster_role_ready && OidIsValid(get_role_oid(DC_CLUSTER_ROLE, true)))
		dc_mark_cluster_role_ready();
}

/*
 * How members of this server are known: durable_cluster.advertise_address,
 * or this host's name and port for a cluster of one server.
 */
const char *
dc_self_address(void)
{
	static char address[NI_MAXHOST + 16];

	if (dc_advertise_address && dc_advertise_address[0] != '\0')
		return dc_advertise_address;
	if (address[0] == '\0')
	{
		char		host[NI_MAXHOST];

		if (gethostname(host, sizeof(host)) != 0)
			strlcpy(host, "localhost", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		snprintf(address, sizeof(address), "%s:%d", host, PostPortNumber);
	}
	return address;
}
