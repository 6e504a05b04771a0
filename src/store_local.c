/*-------------------------------------------------------------------------
 *
 * store_local.c
 *	  The in-process store transport: a node whose store is its own
 *	  server's database loads and writes its batches itself, in
 *	  transactions of its own, with store_batch.c.  No session, socket or
 *	  parameter encoding is on that path, and no other process is woken.
 *
 * A batch is one transaction: the first load (or the write, if nothing
 * needed loading) starts it, the write commits it.  Between the two the
 * node applies the commands in memory while the transaction holds only
 * its snapshot and AccessShareLock on the tables it read, which nothing
 * but DDL waits for.  The rows are written at the end, then the fence is
 * checked in a snapshot of its own and the transaction commits
 * (DC_FENCE_CHECK_LAST): a node stopped anywhere in its batch (SIGSTOP, a
 * stalled machine) holds no lock a change of owner waits for, only the
 * rows it wrote, which a new owner takes as held after a short wait: their
 * commands fail, to be retried, and the rest of its batches go on
 * (store_batch.c, docs/design.md "A paused node").
 *
 * The commit is asynchronous (synchronous_commit = off): the node does not
 * wait for the WAL flush, and goes on with its next batch while the
 * callers' backends wait for it before they show the replies (durable.c).
 * So the node never holds WALWriteLock for a flush, which every commit of
 * the server would wait for while it is stopped; what it still holds for
 * microseconds (a page it changes, a WAL insertion) docs/design.md lists.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "durable.h"
#include "settings.h"
#include "store_batch.h"
#include "store_transport.h"

/* the batch's transaction was started here and is open */
static bool batch_open = false;

/* synchronous_commit is off in this process (local_start) */
static bool started = false;

/*
 * Open the batch's transaction, if it is not open yet.
 *
 * A worker's own transaction has no statement_timeout; the batch sets one,
 * half of failure_timeout, so that whatever it runs (a user's trigger on
 * the state table, a slow disk) cannot keep the node from its next
 * heartbeat for longer than that: the batch fails instead (57014).
 */
static void
begin_batch(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (batch_open)
		return;
	if (!started)
	{
		/*
		 * The process's transactions are the batches: their commits leave
		 * the flush to the callers (durable.c).
		 */
		SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
		started = true;
	}
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	dc_batch_begin();
	enable_timeout_after(STATEMENT_TIMEOUT, Max(dc_failure_timeout_ms / 2, 1));
	batch_open = true;
	/* what the batch allocates outlives the transaction: the node's context */
	MemoryContextSwitchTo(cxt);
}

/*
 * The batch's timeout off, and a cancel it or lock_timeout may have left
 * pending forgotten: it was meant for the batch, which is over, and in a
 * worker that reads no commands it would end the next thing it does.
 */
static void
stop_timeout(void)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	QueryCancelPending = false;
}

/* Commit the batch's transaction, or roll it back. */
static void
end_batch(bool commit)
{
	MemoryContext cxt = CurrentMemoryContext;

	Assert(batch_open);
	batch_open = false;
	stop_timeout();
	PopActiveSnapshot();
	if (commit)
		CommitTransactionCommand();
	else
		AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
}

static void
local_load_batch(DcEntityLoad *loads, int nloads, DcCommandLog *lookups, int nlookups)
{
	int			n = Max(nloads, nlookups);
	Datum	   *mall_ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *user_ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *command_ids = palloc(sizeof(Datum) * Max(n, 1));
	DcFoundRow *found = palloc(sizeof(DcFoundRow) * Max(n, 1));

	begin_batch();

	for (int i = 0; i < nloads; i++)
	{
		mall_ids[i] = CStringGetTextDatum(loads[i].mall_id);
		user_ids[i] = CStringGetTextDatum(loads[i].user_id);
	}
	dc_batch_find_states(nloads, mall_ids, user_ids, found);
	for (int i = 0; i < nloads; i++)
	{
		dc_entity_init(&loads[i].state);
		loads[i].held = found[i].held;
		if (found[i].found)
			dc_entity_from_jsonb(DatumGetJsonbP(found[i].doc), found[i].revision,
								 &loads[i].state);
	}

	for (int i = 0; i < nlookups; i++)
	{
		mall_ids[i] = CStringGetTextDatum(lookups[i].mall_id);
		user_ids[i] = CStringGetTextDatum(lookups[i].user_id);
		command_ids[i] = CStringGetTextDatum(lookups[i].command_id);
	}
	dc_batch_find_replies(nlookups, mall_ids, user_ids, command_ids, found);
	for (int i = 0; i < nlookups; i++)
	{
		lookups[i].reply = lookups[i].request = NULL;
		lookups[i].held = found[i].held;
		if (!found[i].found)
			continue;
		lookups[i].reply = DatumGetJsonbPCopy(found[i].doc);
		lookups[i].request = DatumGetJsonbPCopy(found[i].request);
	}
}

/* The batch as the rows store_batch.c writes. */
static void
batch_rows(const char *node_name, const DcBatchWrite *batch, DcBatchRows *rows)
{
	rows->node_name = cstring_to_text(node_name);

	rows->nfence = batch->nshards;
	rows->fence = palloc(sizeof(Datum) * FENCE_NATTS * Max(batch->nshards, 1));
	for (int i = 0; i < batch->nshards; i++)
	{
		BATCH_FIELD(rows->fence, FENCE_NATTS, i, FENCE_SHARD_ID) = Int32GetDatum(batch->shards[i]);
		BATCH_FIELD(rows->fence, FENCE_NATTS, i, FENCE_EPOCH) = Int64GetDatum(batch->epochs[i]);
	}

	rows->nentities = batch->nwrites;
	rows->entities = palloc(sizeof(Datum) * WRITE_NATTS * Max(batch->nwrites, 1));
	for (int i = 0; i < batch->nwrites; i++)
	{
		const DcEntityWrite *w = &batch->writes[i];
		Datum	   *row = &BATCH_FIELD(rows->entities, WRITE_NATTS, i, 0);

		row[WRITE_MALL_ID] = CStringGetTextDatum(w->mall_id);
		row[WRITE_USER_ID] = CStringGetTextDatum(w->user_id);
		row[WRITE_SHARD_ID] = Int32GetDatum(w->shard);
		row[WRITE_STATE] = JsonbPGetDatum(w->state_doc);
		row[WRITE_REVISION] = Int64GetDatum(w->revision);
		row[WRITE_OLD_REVISION] = Int64GetDatum(w->old_revision);
	}

	rows->nlogs = batch->nlogs;
	rows->log = palloc(sizeof(Datum) * ENTRY_NATTS * Max(batch->nlogs, 1));
	for (int i = 0; i < batch->nlogs; i++)
	{
		const DcCommandLog *l = &batch->logs[i];
		Datum	   *row = &BATCH_FIELD(rows->log, ENTRY_NATTS, i, 0);

		row[ENTRY_MALL_ID] = CStringGetTextDatum(l->mall_id);
		row[ENTRY_USER_ID] = CStringGetTextDatum(l->user_id);
		row[ENTRY_COMMAND_ID] = CStringGetTextDatum(l->command_id);
		row[ENTRY_REPLY] = JsonbPGetDatum(l->reply);
		row[ENTRY_REQUEST] = JsonbPGetDatum(l->request);
	}

	rows->nsagas = batch->nsagas;
	rows->saga_steps = palloc(sizeof(Datum) * STEP_NATTS * Max(batch->nsagas, 1));
	for (int i = 0; i < batch->nsagas; i++)
	{
		BATCH_FIELD(rows->saga_steps, STEP_NATTS, i, STEP_RECORD) =
			JsonbPGetDatum(batch->sagas[i].record);
		BATCH_FIELD(rows->saga_steps, STEP_NATTS, i, STEP_STEP) =
			CStringGetTextDatum(batch->sagas[i].step);
	}
}

/*
 * Write the batch and commit it; or, if a shard of it was found fenced or
 * an entity held by another transaction, roll it back and list those.  A
 * batch that only read checks its fence in a fresh snapshot and commits
 * nothing.
 */
static int
local_write_batch(const char *node_name, const DcBatchWrite *batch, int *fenced,
				  int *held, int *nheld)
{
	DcBatchRows rows;
	List	   *found;
	List	   *held_rows = NIL;
	ListCell   *lc;
	int			nfenced = 0;

	begin_batch();
	batch_rows(node_name, batch, &rows);
	if (batch->nwrites == 0 && batch->nlogs == 0 && batch->nsagas == 0)
	{
		PushActiveSnapshot(GetLatestSnapshot());
		found = dc_batch_fenced(&rows, false);
		PopActiveSnapshot();
	}
	else
		found = dc_batch_store(&rows, DC_FENCE_CHECK_LAST, &held_rows);

	foreach(lc, found)
		fenced[nfenced++] = lfirst_int(lc);
	*nheld = 0;
	foreach(lc, held_rows)
		held[(*nheld)++] = lfirst_int(lc);
	end_batch(nfenced == 0 && *nheld == 0);
	return nfenced;
}

/*
 * After an error, or when the batch ended without a write: roll back the
 * batch's transaction, if one is open.
 */
static void
local_release_batch(void)
{
	if (!batch_open && !IsTransactionOrTransactionBlock())
		return;
	batch_open = false;
	stop_timeout();
	AbortCurrentTransaction();
}

/*
 * Where the WAL must be flushed before the replies of the batch may go
 * out: everything inserted so far.  That covers the batch's commit, the
 * earlier batches whose states it replied from memory, and states it
 * loaded that another node committed, asynchronously too.
 */
static XLogRecPtr
local_durable_lsn(void)
{
	return dc_wal_insert_end();
}

const DcStoreTransport dc_local_transport = {
	.load_batch = local_load_batch,
	.write_batch = local_write_batch,
	.release_batch = local_release_batch,
	.durable_lsn = local_durable_lsn,
};
