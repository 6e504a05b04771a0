/*-------------------------------------------------------------------------
 *
 * store_batch.c
 *	  The store's side of a node's batch: durable_cluster.load_batch() and
 *	  durable_cluster.write_batch().  They run in the store's backend,
 *	  called over libpq by the node (store.c).
 *
 * A batch is a handful of primary-key lookups, updates and inserts.  As
 * SQL, even a prepared statement pays an executor start-up, and that cost
 * more than the work itself (see README, Measurements).  So these
 * functions do what the logical replication apply worker does for each row
 * it receives: index lookups (state_table.c) and the executor's single-row
 * routines (ExecSimpleRelationUpdate/Insert), which keep indexes,
 * constraints and row triggers right without planning anything.
 *
 * load_batch returns the stored state of the entities a node does not hold
 * and the logged replies of the commands it got with a command_id, in one
 * round trip.
 *
 * Fencing (write_batch): each shard of the batch is looked up through its
 * primary key and locked FOR SHARE (RelationFindReplTupleByIndex waits for
 * a change of owner in flight and returns the row as it is after it);
 * unless every one still names this node at the epoch the node holds,
 * nothing is written and the fenced shards are returned.  A change of
 * owner updates those rows, so it waits for this transaction to end.
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
#include "commands/sequence.h"
#include "common/pg_prng.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "state_table.h"

PG_FUNCTION_INFO_V1(dc_load_batch);
PG_FUNCTION_INFO_V1(dc_write_batch);

/* Every argument of these functions is required. */
static void
no_null_arguments(FunctionCallInfo fcinfo)
{
	for (int i = 0; i < PG_NARGS(); i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.%s is NULL",
						   i + 1, get_func_name(fcinfo->flinfo->fn_oid)));
}

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
				errmsg("argument %d of durable_cluster.%s has %d elements, not %d",
					   argno + 1, get_func_name(fcinfo->flinfo->fn_oid), count, n));
	for (int i = 0; i < count; i++)
		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of durable_cluster.%s holds a NULL",
						   argno + 1, get_func_name(fcinfo->flinfo->fn_oid)));
	return count;
}

/*
 * The command log keeps at least an entity's newest LOG_KEEP entries.  On
 * one insert in LOG_PRUNE_EVERY, chosen at random, the entity's older ones
 * are deleted; so an entity holds about LOG_KEEP + LOG_PRUNE_EVERY at most
 * on average, whatever order entities are logged in.
 */
#define LOG_KEEP			1000
#define LOG_PRUNE_EVERY		64

static void
prune_command_log(Datum mall_id, Datum user_id)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {mall_id, user_id};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("DELETE FROM durable_cluster.command_log "
							  " WHERE mall_id = $1 AND user_id = $2 AND seq < "
							  "       (SELECT seq FROM durable_cluster.command_log "
							  "         WHERE mall_id = $1 AND user_id = $2 "
							  "         ORDER BY seq DESC OFFSET " CppAsString2(LOG_KEEP) " - 1 LIMIT 1)",
							  2, types, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not prune durable_cluster.command_log");
	SPI_finish();
}

static RangeTblEntry *
range_table_entry(Relation rel)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	return rte;
}

/* rel, entry rti of the range table, ready for single-row writes */
static ResultRelInfo *
result_relation(EState *estate, Relation rel, Index rti)
{
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	InitResultRelInfo(rri, rel, rti, NULL, 0);
	ExecOpenIndices(rri, false);
	/* so that AFTER triggers find it; ExecCloseResultRelations closes all */
	estate->es_opened_result_relations = lappend(estate->es_opened_result_relations, rri);
	return rri;
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
 * For each i < n whose primary key, key column k being keys[k][i], is in
 * rel: a row (what, i + 1, its doc_att, its revision_att or NULL, its
 * request_att or NULL).
 */
static void
put_found_rows(ReturnSetInfo *rsinfo, Relation rel, Oid pkey, const char *what,
			   Datum **keys, int n, AttrNumber doc_att, AttrNumber revision_att,
			   AttrNumber request_att)
{
	Relation	index = index_open(pkey, AccessShareLock);
	int			nkeys = IndexRelationGetNumberOfKeyAttributes(index);
	TupleTableSlot *slot = table_slot_create(rel, NULL);

	for (int i = 0; i < n; i++)
	{
		Datum		key[INDEX_MAX_KEYS];
		Datum		values[5];
		bool		nulls[5] = {0};
		bool		isnull;

		for (int k = 0; k < nkeys; k++)
			key[k] = keys[k][i];
		if (!dc_find_by_key(rel, index, key, nkeys, slot))
			continue;
		values[0] = CStringGetTextDatum(what);
		values[1] = Int32GetDatum(i + 1);
		values[2] = slot_getattr(slot, doc_att, &isnull);
		if (revision_att != InvalidAttrNumber)
			values[3] = slot_getattr(slot, revision_att, &isnull);
		else
			nulls[3] = true;
		if (request_att != InvalidAttrNumber)
			values[4] = slot_getattr(slot, request_att, &isnull);
		else
			nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
}

/*
 * durable_cluster.load_batch(mall_ids, user_ids, log_mall_ids, log_user_ids,
 *                            command_ids)
 * Rows ('state', i, state, revision, NULL) for the entities i that are
 * stored, and ('reply', i, reply, NULL, request) for the command ids i
 * that are logged; i counts from 1.
 */
Datum
dc_load_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *mall_ids,
			   *user_ids,
			   *log_mall_ids,
			   *log_user_ids,
			   *command_ids;
	int			n,
				nlogs;
	Oid			pkey;
	Relation	rel;

	no_null_arguments(fcinfo);
	n = array_argument(fcinfo, 0, TEXTOID, -1, &mall_ids);
	array_argument(fcinfo, 1, TEXTOID, n, &user_ids);
	nlogs = array_argument(fcinfo, 2, TEXTOID, -1, &log_mall_ids);
	array_argument(fcinfo, 3, TEXTOID, nlogs, &log_user_ids);
	array_argument(fcinfo, 4, TEXTOID, nlogs, &command_ids);
	InitMaterializedSRF(fcinfo, 0);

	if (n > 0)
	{
		rel = dc_open_entity_state(AccessShareLock, &pkey);
		put_found_rows(rsinfo, rel, pkey, "state", (Datum *[]) {mall_ids, user_ids}, n,
					   ENTITY_STATE, ENTITY_REVISION, InvalidAttrNumber);
		table_close(rel, NoLock);
	}
	if (nlogs > 0)
	{
		rel = dc_open_command_log(AccessShareLock, &pkey);
		put_found_rows(rsinfo, rel, pkey, "reply",
					   (Datum *[]) {log_mall_ids, log_user_ids, command_ids}, nlogs,
					   LOG_REPLY, InvalidAttrNumber, LOG_REQUEST);
		table_close(rel, NoLock);
	}
	return (Datum) 0;
}

/*
 * Add the command_log entries of a batch, as range table entry 2 of
 * estate.  Returns the indexes of the entries whose entity's log is to be
 * pruned (one in LOG_PRUNE_EVERY, at random).
 */
static List *
log_replies(EState *estate, Relation log_rel, const Datum *mall_ids, const Datum *user_ids,
			const Datum *command_ids, const Datum *replies, const Datum *requests, int nlogs)
{
	ResultRelInfo *rri = result_relation(estate, log_rel, 2);
	TupleTableSlot *log = table_slot_create(log_rel, &estate->es_tupleTable);
	Oid			seq_oid = get_relname_relid("command_log_seq", RelationGetNamespace(log_rel));
	List	   *prune = NIL;

	if (!OidIsValid(seq_oid))
		elog(ERROR, "durable_cluster.command_log_seq does not exist");
	for (int i = 0; i < nlogs; i++)
	{
		ExecClearTuple(log);
		log->tts_values[LOG_MALL_ID - 1] = mall_ids[i];
		log->tts_values[LOG_USER_ID - 1] = user_ids[i];
		log->tts_values[LOG_COMMAND_ID - 1] = command_ids[i];
		log->tts_values[LOG_SEQ - 1] = Int64GetDatum(nextval_internal(seq_oid, false));
		log->tts_values[LOG_REPLY - 1] = replies[i];
		log->tts_values[LOG_REQUEST - 1] = requests[i];
		memset(log->tts_isnull, false, sizeof(bool) * LOG_NATTS);
		ExecStoreVirtualTuple(log);
		ExecSimpleRelationInsert(rri, estate, log);
		if (pg_prng_uint32(&pg_global_prng_state) % LOG_PRUNE_EVERY == 0)
			prune = lappend_int(prune, i);
	}
	return prune;
}

/* The rows of durable_cluster.sagas for the transfer steps of a batch. */
static void
record_saga_steps(Datum records, Datum steps)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT durable_cluster.record_saga_steps($1, $2)",
							  2, (Oid[]) {JSONBARRAYOID, TEXTARRAYOID},
							  (Datum[]) {records, steps}, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record the saga steps");
	SPI_finish();
}

/*
 * durable_cluster.write_batch(node, shards, epochs, mall_ids, user_ids,
 *                             entity_shards, states, revisions, old_revisions,
 *                             log_mall_ids, log_user_ids, command_ids, replies,
 *                             requests, saga_records, saga_steps)
 * Returns NULL when the batch was written, or the shards found fenced (and
 * then wrote nothing).  old_revision 0 means a new row.  The log_ arrays
 * are command_log entries to add, the saga_ arrays transfer steps to
 * record.
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
	Datum	   *log_mall_ids,
			   *log_user_ids,
			   *command_ids,
			   *replies,
			   *requests;
	Datum	   *saga_records,
			   *saga_steps;
	int			nshards,
				n,
				nlogs,
				nsagas;
	Oid			pkey;
	Oid			log_pkey;
	Relation	rel;
	Relation	index;
	Relation	log_rel;
	List	   *range_table;
	EState	   *estate;
	ResultRelInfo *rri;
	EPQState	epq;
	TupleTableSlot *old;
	TupleTableSlot *new;
	List	   *prune = NIL;
	ListCell   *lc;
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int			stale = 0;

	no_null_arguments(fcinfo);

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
	nlogs = array_argument(fcinfo, 9, TEXTOID, -1, &log_mall_ids);
	array_argument(fcinfo, 10, TEXTOID, nlogs, &log_user_ids);
	array_argument(fcinfo, 11, TEXTOID, nlogs, &command_ids);
	array_argument(fcinfo, 12, JSONBOID, nlogs, &replies);
	array_argument(fcinfo, 13, JSONBOID, nlogs, &requests);
	nsagas = array_argument(fcinfo, 14, JSONBOID, -1, &saga_records);
	array_argument(fcinfo, 15, TEXTOID, nsagas, &saga_steps);

	/* an executor state for single-row writes, as the apply worker sets up */
	rel = dc_open_entity_state(RowExclusiveLock, &pkey);
	index = index_open(pkey, RowExclusiveLock);
	/* the command log only when the batch has replies to log */
	log_rel = nlogs > 0 ? dc_open_command_log(RowExclusiveLock, &log_pkey) : NULL;
	range_table = list_make1(range_table_entry(rel));
	if (log_rel)
		range_table = lappend(range_table, range_table_entry(log_rel));
	estate = CreateExecutorState();
	estate->es_output_cid = GetCurrentCommandId(true);
	estate->es_snapshot = GetActiveSnapshot();
	ExecInitRangeTable(estate, range_table);
	rri = result_relation(estate, rel, 1);
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

			if (!dc_find_by_key(rel, index, (Datum[]) {mall_ids[i], user_ids[i]}, 2, old) ||
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

	if (log_rel)
		prune = log_replies(estate, log_rel, log_mall_ids, log_user_ids, command_ids,
							replies, requests, nlogs);

	AfterTriggerEndQuery(estate);
	EvalPlanQualEnd(&epq);
	/* the indexes of the result relations, and what AFTER triggers opened */
	ExecCloseResultRelations(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	if (log_rel)
		table_close(log_rel, NoLock);

	foreach(lc, prune)
		prune_command_log(log_mall_ids[lfirst_int(lc)], log_user_ids[lfirst_int(lc)]);
	if (nsagas > 0)
		record_saga_steps(PG_GETARG_DATUM(14), PG_GETARG_DATUM(15));
	PG_RETURN_NULL();
}
