/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  dc_node_stats and dc_stats_reset: what the nodes of this server did;
 *	  durable_cluster.missing_workers(): which of its workers do not run.
 *
 * Each node reports into its shared-memory slot after every batch and
 * every tick (inbox.c, dc_node_report): the entities it holds in memory,
 * the commands it applied, its batches and its passivations.  These
 * functions read or zero those slots.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "durable_cluster.h"
#include "inbox.h"
#include "jsonb_build.h"

PG_FUNCTION_INFO_V1(dc_node_stats);
PG_FUNCTION_INFO_V1(dc_stats_reset);
PG_FUNCTION_INFO_V1(dc_missing_workers);

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
		DcNodeSlot	copy;
		Datum		values[NODE_STATS_COLUMNS];
		bool		nulls[NODE_STATS_COLUMNS] = {0};

		/* copy first: nothing may allocate while the spinlock is held */
		SpinLockAcquire(&dc_shared->mutex);
		copy = dc_shared->nodes[i];
		SpinLockRelease(&dc_shared->mutex);
		if (!copy.in_use)
			continue;

		values[0] = CStringGetTextDatum(copy.name);
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
	int			n = 0;
	bool		saga_running;

	dc_check_usable();
	SpinLockAcquire(&dc_shared->mutex);
	for (int i = 0; i < DC_MAX_NODES; i++)
		if (dc_shared->nodes[i].in_use && dc_shared->nodes[i].pid == 0)
			strlcpy(names[n++], dc_shared->nodes[i].name, NAMEDATALEN);
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
	SpinLockAcquire(&dc_shared->mutex);
	for (int i = 0; i < DC_MAX_NODES; i++)
		dc_stats_zero(&dc_shared->nodes[i], now);
	SpinLockRelease(&dc_shared->mutex);
	PG_RETURN_VOID();
}
