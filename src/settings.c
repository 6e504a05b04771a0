/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The settings of durable_cluster (GUCs) and what follows from them
 *	  alone: the names of nodes, this server's address, whether the store
 *	  and the cluster are on this server.
 *
 * The bottom layer: no shared memory, no tables, no connections.
 * durable_cluster.c defines the settings at load (dc_define_settings).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <netdb.h>
#include <unistd.h>

#include "postmaster/postmaster.h"
#include "utils/guc.h"

#include "settings.h"

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
int			dc_max_pending_per_role = 10000;
int			dc_command_log_retention_s = 24 * 60 * 60;
int			dc_command_log_per_entity = 100;
int			dc_saga_retention_s = 24 * 60 * 60;

bool		dc_preloaded = false;
bool		dc_store_in_process = true;
int			dc_batch_flush_wait_ms = 5;

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

void
dc_define_settings(void)
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

	DefineCustomBoolVariable("durable_cluster.store_in_process",
							 "Whether a node whose store is this server writes it in its own process.",
							 "Otherwise it reaches the store over libpq, as a node whose store is on another server does.",
							 &dc_store_in_process,
							 true,
							 PGC_POSTMASTER,
							 0,
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
							"How long dc.send_command waits for a node's reply.",
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

	DefineCustomIntVariable("durable_cluster.batch_flush_wait",
							"How long a node writing in process waits, before its next batch, for the WAL flush of the batch before its last.",
							"Commands arriving meanwhile make one batch, as with a synchronous commit; 0: no wait.",
							&dc_batch_flush_wait_ms,
							5, 0, 100,
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
							"How long the outcome of a command sent with dc.send_command_at_commit is kept.",
							"dc.command_outcome() answers for it until then; the saga worker removes it afterwards.",
							&dc_at_commit_retention_ms,
							24 * 60 * 60 * 1000, 1000, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/* a policy of the server: no session may change it for itself */
	DefineCustomIntVariable("durable_cluster.max_pending_per_role",
							"Most commands sent at commit that may wait to be sent, per login role.",
							"dc.send_command_at_commit fails with 53400 while the session's login role has this many waiting on this server.",
							&dc_max_pending_per_role,
							10000, 1, 100000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/* read on the store's server: by its saga worker and its store backends */
	DefineCustomIntVariable("durable_cluster.command_log_retention",
							"How long the reply of a command sent with a command_id is kept for its retries.",
							"A retry that comes later is applied as a new command.  Set on the store's server, whose saga worker removes older entries.",
							&dc_command_log_retention_s,
							24 * 60 * 60, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.command_log_per_entity",
							"Most command_log entries kept per entity: its newest ones.",
							"A retry of a command with this many later logged commands on its entity is applied as a new command.  Set on the store's server.",
							&dc_command_log_per_entity,
							100, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("durable_cluster.saga_retention",
							"How long a completed or compensated transfer is kept in durable_cluster.sagas.",
							"Running transfers are never removed.  Set on the store's server, whose saga worker removes older ones.",
							&dc_saga_retention_s,
							24 * 60 * 60, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("durable_cluster");
}

/*
 * node-N, or node-N@advertise_address in a cluster of several servers, so
 * that names are unique across the cluster.
 */
void
dc_node_name(int index, char *buf, size_t len)
{
	if (dc_advertise_address && dc_advertise_address[0] != '\0')
		snprintf(buf, len, "node-%d@%s", index + 1, dc_advertise_address);
	else
		snprintf(buf, len, "node-%d", index + 1);
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
 * The nodes reach the store through client sessions (store.c), as do the
 * callers of other servers forwarding commands here: they take connection
 * slots like any client.  A role that holds every free slot would keep a
 * node that lost its session from getting one again, and the cluster would
 * stop serving.  PostgreSQL 16 keeps reserved_connections for the roles
 * of pg_use_reserved_connections, which CREATE EXTENSION grants dc_cluster;
 * say at start when fewer are kept than this server's nodes may use, and
 * on 15, which cannot keep any for a role that is no superuser, that the
 * risk is there.
 */
void
dc_check_reserved_connections(void)
{
	if (dc_nodes == 0)
		return;
#if PG_VERSION_NUM >= 160000
	if (ReservedConnections < dc_max_nodes)
		ereport(WARNING,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("reserved_connections (%d) keeps fewer connection slots than durable_cluster's nodes may need (durable_cluster.max_nodes = %d)",
					   ReservedConnections, dc_max_nodes),
				errdetail("The nodes reach the store through sessions of the role dc_cluster, which may use reserved slots; without enough of them, roles holding every other slot keep a node that lost its session from reconnecting, and the cluster stops serving."),
				errhint("Set reserved_connections to at least %d, and on the store's server to the nodes of every server plus their callers' forwarding sessions.",
						dc_max_nodes));
#else
	ereport(WARNING,
			errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			errmsg("PostgreSQL %s cannot keep connection slots for durable_cluster's sessions",
				   PG_MAJORVERSION),
			errdetail("The nodes reach the store through sessions of the role dc_cluster, which is no superuser; roles holding every free slot keep a node that lost its session from reconnecting, and the cluster stops serving."),
			errhint("Limit other roles' connections (ALTER ROLE ... CONNECTION LIMIT) or leave max_connections room, or run PostgreSQL 16 or later with reserved_connections set."));
#endif
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
