/*-------------------------------------------------------------------------
 *
 * batch_write.c
 *	  durable_cluster.write_batch(): a node's batch fenced and written in
 *	  one call.  It runs in the store's backend, called over libpq by the
 *	  node (store.c).
 *
 * A batch is a handful of primary-key updates and inserts.  As SQL, even
 * a prepared statement pays an executor start-up, and that cost more than
 * the writes themselves (see README, Measurements).  So this function does
 * what the logical replication apply worker does for each row it receives:
 * index lookups (state_table.c) and the executor's single-row routines
 * (ExecSimpleRelationUpdate/Insert), which keep indexes, constraints and
 * row triggers right without planning anything.
 *
 * Fencing: each shard of the batch is looked up through its primary key
 * and locked FOR SHARE (RelationFindReplTupleByIndex waits for a change of
 * owner in flight and returns the row as it is after it); unless every one
 * still names this node at the epoch the node holds, nothing is written and
 * the fenced shards are returned.  A change of owner updates those rows, so
 * it waits for this transaction to end.
 *
 * Entity rows are written only by the owner of their shard, so an update
 * finds the row at the revision the node holds; otherwise (the row changed
 * or is missing) the whole batch fails with serialization_failure.  An
 * insert of a key that exists fails on the primary key, also as a whole.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "state_table.h"

PG_FUNCTION_INFO_V1(dc_write_batch);

/*
 * The elements of array argument argno, which may hold no NULL and, unless
 * n < 0, must hold n elements.  Returns how many it holds.
 */
static int
array_argument(FunctionCallInfo fcinfo, int argno, Oid type, int n, Datum **values)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool	   *nulls;
	int			count;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), type, typlen, typbyval, typalign,
					  values, &nulls, &count);
	if (n >= 0 && count != n)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("argument %d of durable_cluster.write_batch has %d elements, not %d",
					   argno + 1, count, n));
	for (int i = 0; i < count; i++)
		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.write_batch holds a NULL",
						   argno + 1));
	return count;
}

/*
 * Lock every shard row of the batch FOR SHARE and return those that do not
 * name node_name at the given epoch.
 */
static List *
fence_shards(text *node_name, Datum *shards, Datum *epochs, int nshards)
{
	Oid			pkey;
	Relation	rel = dc_open_shards(RowExclusiveLock, &pkey);
	TupleTableSlot *search = table_slot_create(rel, NULL);
	TupleTableSlot *found = table_slot_create(rel, NULL);
	List	   *fenced = NIL;

	for (int i = 0; i < nshards; i++)
	{
		bool		isnull;
		Datum		node;
		bool		held;

		ExecClearTuple(search);
		memset(search->tts_isnull, true, sizeof(bool) * SHARDS_NATTS);
		search->tts_values[SHARDS_SHARD_ID - 1] = shards[i];
		search->tts_isnull[SHARDS_SHARD_ID - 1] = false;
		ExecStoreVirtualTuple(search);

		held = RelationFindReplTupleByIndex(rel, pkey, LockTupleShare, search, found);
		if (held)
		{
			node = slot_getattr(found, SHARDS_NODE, &isnull);
			held = !isnull &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, node,
													 PointerGetDatum(node_name))) &&
				DatumGetInt64(slot_getattr(found, SHARDS_EPOCH, &isnull)) ==
				DatumGetInt64(epochs[i]);
		}
		if (!held)
			fenced = lappend_int(fenced, DatumGetInt32(shards[i]));
	}

	ExecDropSingleTupleTableSlot(search);
	ExecDropSingleTupleTableSlot(found);
	table_close(rel, NoLock);
	return fenced;
}

/*
 * durable_cluster.write_batch(node, shards, epochs, mall_ids, user_ids,
 *                             entity_shards, states, revisions, old_revisions)
 * Returns NULL when the batch was written, or the shards found fenced (and
 * then wrote nothing).  old_revision 0 means a new row.
 */
Datum
dc_write_batch(PG_FUNCTION_ARGS)
{
	List	   *fenced;
	Datum	   *shards,
			   *epochs,
			   *mall_ids,
			   *user_ids,
			   *entity_shards,
			   *states,
			   *revisions,
			   *old_revisions;
	int			nshards,
				n;
	Oid			pkey;
	Relation	rel;
	Relation	index;
	EState	   *estate;
	ResultRelInfo *rri;
	RangeTblEntry *rte;
	EPQState	epq;
	TupleTableSlot *old;
	TupleTableSlot *new;
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int			stale = 0;

	for (int i = 0; i < 9; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.write_batch is NULL", i + 1));

	nshards = array_argument(fcinfo, 1, INT4OID, -1, &shards);
	array_argument(fcinfo, 2, INT8OID, nshards, &epochs);
	fenced = fence_shards(PG_GETARG_TEXT_PP(0), shards, epochs, nshards);
	if (fenced != NIL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * list_length(fenced));
		ListCell   *lc;
		int			i = 0;

		foreach(lc, fenced)
			elems[i++] = Int32GetDatum(lfirst_int(lc));
		PG_RETURN_ARRAYTYPE_P(construct_array(elems, i, INT4OID, 4, true, TYPALIGN_INT));
	}

	n = array_argument(fcinfo, 3, TEXTOID, -1, &mall_ids);
	array_argument(fcinfo, 4, TEXTOID, n, &user_ids);
	array_argument(fcinfo, 5, INT4OID, n, &entity_shards);
	array_argument(fcinfo, 6, JSONBOID, n, &states);
	array_argument(fcinfo, 7, INT8OID, n, &revisions);
	array_argument(fcinfo, 8, INT8OID, n, &old_revisions);

	/* an executor state for single-row writes, as the apply worker sets up */
	rel = dc_open_entity_state(RowExclusiveLock, &pkey);
	index = index_open(pkey, RowExclusiveLock);
	estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_output_cid = GetCurrentCommandId(true);
	estate->es_snapshot = GetActiveSnapshot();
	ExecOpenIndices(rri, false);
	EvalPlanQualInit(&epq, estate, NULL, NIL, -1);
	AfterTriggerBeginQuery();
	old = table_slot_create(rel, &estate->es_tupleTable);
	new = table_slot_create(rel, &estate->es_tupleTable);

	for (int i = 0; i < n && stale == 0; i++)
	{
		int64		old_revision = DatumGetInt64(old_revisions[i]);

		ExecClearTuple(new);
		new->tts_values[ENTITY_MALL_ID - 1] = mall_ids[i];
		new->tts_values[ENTITY_USER_ID - 1] = user_ids[i];
		new->tts_values[ENTITY_SHARD_ID - 1] = entity_shards[i];
		new->tts_values[ENTITY_STATE - 1] = states[i];
		new->tts_values[ENTITY_REVISION - 1] = revisions[i];
		new->tts_values[ENTITY_UPDATED_AT - 1] = now;
		memset(new->tts_isnull, false, sizeof(bool) * ENTITY_NATTS);
		ExecStoreVirtualTuple(new);

		if (old_revision == 0)
			ExecSimpleRelationInsert(rri, estate, new);
		else
		{
			bool		isnull;

			if (!dc_find_entity(rel, index, mall_ids[i], user_ids[i], old) ||
				DatumGetInt64(slot_getattr(old, ENTITY_REVISION, &isnull)) != old_revision)
			{
				stale = i + 1;
				break;
			}
			ExecSimpleRelationUpdate(rri, estate, &epq, old, new);
		}
	}

	if (stale > 0)
		ereport(ERROR,
				errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				errmsg("stored state changed under the owning node"),
				errdetail("Entity (%s, %s) is not at revision " INT64_FORMAT ", the one the node holds.",
						  TextDatumGetCString(mall_ids[stale - 1]),
						  TextDatumGetCString(user_ids[stale - 1]),
						  DatumGetInt64(old_revisions[stale - 1])));

	AfterTriggerEndQuery(estate);
	EvalPlanQualEnd(&epq);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	PG_RETURN_NULL();
}
