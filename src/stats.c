/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  dc_node_stats and dc_stats_reset: what the nodes of this server did;
 *	  durable_cluster.missing_workers(): which of its workers do not run;
 *	  durable_cluster.library_version(): the version of the loaded library.
 *
 * Each node reports into its shared-memory slot after every batch and
 * every tick (shared_memory.c, dc_node_report): the entities it holds in memory,
 * the commands it applied, its batches and its passivations.  These
 * functions read or zero those slots.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "jsonb_build.h"
#include "settings.h"
#include "shared_memory.h"

PG_FUNCTION_INFO_V1(dc_node_stats);
PG_FUNCTION_INFO_V1(dc_stats_reset);
PG_FUNCTION_INFO_V1(dc_missing_workers);
PG_FUNCTION_INFO_V1(dc_library_version);

/*
 * durable_cluster.library_version(): the version of the SQL objects this
 * library serves, which dc_version() shows next to the installed one.  No
 * dc_check_usable(): it answers a library loaded without preloading too.
 */
Datum
dc_library_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(DC_VERSION));
}

#define NODE_STATS_COLUMNS 8

/* durable_cluster.node_stats(): one row per node slot in use */
Datum
dc_node_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	dc_check_usable();
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < DC_MAX_NODES; i++)
	{
		char		name[NAMEDATALEN];
		DcNodeStats copy;
		Datum		values[NODE_STATS_COLUMNS];
		bool		nulls[NODE_STATS_COLUMNS] = {0};

		if (!dc_node_stats_copy(i, name, &copy))
			continue;

		values[0] = CStringGetTextDatum(name);
		values[1] = Int64GetDatum(copy.entities_in_memory);
		values[2] = Int64GetDatum(copy.commands);
		values[3] = Int64GetDatum(copy.batches);
		values[4] = Int64GetDatum(copy.passivations);
		values[5] = TimestampTzGetDatum(copy.last_batch_at);
		nulls[5] = (copy.last_batch_at == 0);
		values[6] = TimestampTzGetDatum(copy.stats_reset);
		values[7] = Int64GetDatum(copy.memory_bytes);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * durable_cluster.missing_workers() RETURNS jsonb: the names of this
 * server's workers that should run and do not -- nodes in use without a
 * process (not started for want of max_worker_processes, or between a
 * crash and their restart) and the saga worker -- as a JSON array.
 */
Datum
dc_missing_workers(PG_FUNCTION_ARGS)
{
	JsonbParseState *ps = NULL;
	char		names[DC_MAX_NODES][NAMEDATALEN];
	int			n;
	bool		saga_running;

	dc_check_usable();
	n = dc_node_names(names, false);
	SpinLockAcquire(&dc_shared->mutex);
	saga_running = dc_shared->saga_pid != 0;
	SpinLockRelease(&dc_shared->mutex);

	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
		dc_push_string(&ps, NULL, names[i]);
	if (!saga_running)
		dc_push_string(&ps, NULL, "durable_cluster sagas");
	PG_RETURN_JSONB_P(JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_ARRAY, NULL)));
}

/* dc_stats_reset(): zero the counters of every node of this server */
Datum
dc_stats_reset(PG_FUNCTION_ARGS)
{
	TimestampTz now = GetCurrentTimestamp();

	dc_check_usable();
	dc_stats_reset_all(now);
	PG_RETURN_VOID();
}
