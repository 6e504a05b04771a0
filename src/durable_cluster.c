/*-------------------------------------------------------------------------
 *
 * durable_cluster.c
 *	  Module load: the settings are defined (settings.c), the shared-memory
 *	  hooks installed, the static node workers and the saga worker
 *	  registered.  The top layer (src/README.md): it calls down into the
 *	  others, and none calls it.
 *
 * Everything that needs shared memory or starts workers works only when
 * the library is in shared_preload_libraries; loaded any other way, the SQL
 * functions refuse to run and say how to fix it.
 *
 * Copyright (c) 2026, the durable_cluster developers
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

#include "node.h"
#include "settings.h"
#include "shared_memory.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static void
dc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(dc_shmem_size());
	RequestNamedLWLockTranche("durable_cluster", 2);
}

static void
dc_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	dc_shmem_init();
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
	dc_define_settings();

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
				errdetail("Workers that do not fit are not started; dc.cluster_status() lists them as missing."),
				errhint("Raise max_worker_processes to at least %d (%d to add nodes up to durable_cluster.max_nodes), plus what parallel queries and other extensions use, and restart the server.",
						dc_nodes + 1, dc_max_nodes + 1));

	dc_check_timeouts();
	dc_check_reserved_connections();

	/* first: a server short of workers had better lose a node than it */
	register_saga_worker();
	for (int i = 0; i < dc_nodes; i++)
	{
		BackgroundWorker worker;

		dc_node_worker(&worker, i);
		RegisterBackgroundWorker(&worker);
	}
}

