/*-------------------------------------------------------------------------
 *
 * store_batch.c
 *	  The store's side of a node's batch: loads of committed states and
 *	  logged replies, the fence, and the writes.  A node whose store is on
 *	  another server reaches them through durable_cluster.load_batch() and
 *	  durable_cluster.write_batch(), run by a backend of the store; a node
 *	  whose store is its own server calls them in its own transaction
 *	  (store_local.c).
 *
 * A batch is a handful of primary-key lookups, updates and inserts.  As
 * SQL, even a prepared statement pays an executor start-up, and that cost
 * more than the work itself (see docs/benchmarks.md).  So these
 * functions do what the logical replication apply worker does for each row
 * it receives: index lookups (state_table.c) and the executor's single-row
 * routines (ExecSimpleRelationUpdate/Insert), which keep indexes,
 * constraints and row triggers right without planning anything.
 *
 * load_batch returns the stored state of the entities a node does not hold
 * and the logged replies of the commands it got with a command_id, in one
 * round trip.
 *
 * write_batch takes the batch as one durable_cluster.batch: its fence, and
 * its entities, command log entries and transfer steps, each part an array
 * of rows of a type of its own.  The rows are read into DcBatchRows, from
 * which the batch is fenced and written.  Release 0.1 passed the same
 * parts as sixteen parallel arrays; that form is read into DcBatchRows too,
 * for the 0.1 nodes that still write during a rolling upgrade.
 *
 * Fencing: each shard of the batch is looked up through its primary key;
 * unless every one still names this node at the epoch the node holds,
 * the fenced shards are returned and nothing may commit.  When and with
 * which lock is the transport's choice (DcFenceMode in store_batch.h):
 * locked FOR SHARE before the writes (RelationFindReplTupleByIndex waits
 * for a change of owner in flight and returns the row as it is after it),
 * so that a change of owner waits for the batch's commit; or read last,
 * without a lock, by a node that may be paused while it holds what it
 * took.
 *
 * Entity rows are written only by the owner of their shard, so each is
 * found, and locked, at the revision the node holds; otherwise (the row
 * changed, is missing, or exists when the node holds none) the whole
 * batch fails with serialization_failure.  The lock makes that exact when
 * a paused former owner still has the row in an open transaction: the
 * write waits for it (lock_timeout) and then compares with what it
 * committed.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "durable.h"
#include "entity.h"
#include "pg_compat.h"
#include "settings.h"
#include "state_table.h"
#include "store_batch.h"

PG_FUNCTION_INFO_V1(dc_load_batch);
PG_FUNCTION_INFO_V1(dc_write_batch_0_2);
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
 * Rows another transaction has open.  Only the owner of an entity's shard
 * writes its rows, so another transaction has one open only when a former
 * owner, paused in its batch, wrote it before its shard moved
 * (docs/design.md, "A paused node"); a state read before that one ended
 * could be stale, and a write would wait for it.
 *
 * Such a transaction usually ends within milliseconds (a former owner that
 * runs finds its shard moved and rolls back), so a batch waits for one,
 * for HELD_WAIT_MS at most; one still open after that is most likely
 * paused.  Its row is then "held": the batch leaves it out, without
 * waiting again, as do later batches that meet the same transaction while
 * it is open.  So a paused node costs a new owner's batch HELD_WAIT_MS at
 * most, once.
 */
#define HELD_WAIT_MS	Min(100, Max(dc_failure_timeout_ms / 8, 1))
#define HELD_REMEMBERED	8

static bool waited_out = false;		/* this batch waited HELD_WAIT_MS already */
static TransactionId held_by[HELD_REMEMBERED];	/* found open after the wait */
static int	held_next = 0;

/* A new batch: it may wait again. */
void
dc_batch_begin(void)
{
	waited_out = false;
}

/* Did transaction xid end, waiting as the batch still may? */
static bool
transaction_ended(TransactionId xid)
{
	TimestampTz deadline;

	for (int i = 0; i < HELD_REMEMBERED; i++)
		if (TransactionIdEquals(held_by[i], xid))
			return !TransactionIdIsInProgress(xid);
	if (waited_out)
		return !TransactionIdIsInProgress(xid);

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HELD_WAIT_MS);
	while (TransactionIdIsInProgress(xid))
	{
		if (GetCurrentTimestamp() >= deadline)
		{
			waited_out = true;
			held_by[held_next] = xid;
			held_next = (held_next + 1) % HELD_REMEMBERED;
			return false;
		}
		CHECK_FOR_INTERRUPTS();
		pg_usleep(1000L);
	}
	return true;
}

/*
 * A row as last committed, after any transaction that has it open ended;
 * *held, and false, if one did not (above).
 */
static bool
find_latest(Relation rel, Relation index, const Datum *keys, int nkeys,
			TupleTableSlot *slot, bool *held)
{
	*held = false;
	for (;;)
	{
		TransactionId open;
		bool		found = dc_find_latest_by_key(rel, index, keys, nkeys, slot, &open);

		if (!TransactionIdIsValid(open))
			return found;
		if (!transaction_ended(open))
		{
			*held = true;
			ExecClearTuple(slot);
			return false;
		}
	}
}

/*
 * The shards of the batch's fence that do not name its node at the epoch
 * given: with lock, each row locked FOR SHARE (waiting for a change of
 * owner in flight); otherwise read in the active snapshot.
 */
List *
dc_batch_fenced(const DcBatchRows *b, bool lock)
{
	Oid			pkey;
	Relation	rel = dc_open_shards(lock ? RowExclusiveLock : AccessShareLock, &pkey);
	Relation	index = lock ? NULL : index_open(pkey, AccessShareLock);
	TupleTableSlot *search = table_slot_create(rel, NULL);
	TupleTableSlot *found = table_slot_create(rel, NULL);
	List	   *fenced = NIL;

	for (int i = 0; i < b->nfence; i++)
	{
		Datum		shard = BATCH_FIELD(b->fence, FENCE_NATTS, i, FENCE_SHARD_ID);
		bool		isnull;
		Datum		node;
		bool		held;

		if (lock)
		{
			ExecClearTuple(search);
			memset(search->tts_isnull, true, sizeof(bool) * SHARDS_NATTS);
			search->tts_values[SHARDS_SHARD_ID - 1] = shard;
			search->tts_isnull[SHARDS_SHARD_ID - 1] = false;
			ExecStoreVirtualTuple(search);
			held = RelationFindReplTupleByIndex(rel, pkey, LockTupleShare, search, found);
		}
		else
			held = dc_find_by_key(rel, index, &shard, 1, found);
		if (held)
		{
			node = slot_getattr(found, SHARDS_NODE, &isnull);
			held = !isnull &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID, node,
													 PointerGetDatum(b->node_name))) &&
				DatumGetInt64(slot_getattr(found, SHARDS_EPOCH, &isnull)) ==
				DatumGetInt64(BATCH_FIELD(b->fence, FENCE_NATTS, i, FENCE_EPOCH));
		}
		if (!held)
			fenced = lappend_int(fenced, DatumGetInt32(shard));
	}

	ExecDropSingleTupleTableSlot(search);
	ExecDropSingleTupleTableSlot(found);
	if (index)
		index_close(index, NoLock);
	table_close(rel, NoLock);
	return fenced;
}

/*
 * For each i < n whose primary key, key column k being keys[k][i], is in
 * rel: found[i] is its doc_att, and its revision_att or its request_att,
 * copied into the current memory context; as committed by the last
 * transaction that wrote it, waited for if it is still open (found[i].held
 * if that one did not end).
 */
static void
find_rows(Relation rel, Oid pkey, Datum **keys, int n, AttrNumber doc_att,
		  AttrNumber revision_att, AttrNumber request_att, DcFoundRow *found)
{
	Relation	index = index_open(pkey, AccessShareLock);
	int			nkeys = IndexRelationGetNumberOfKeyAttributes(index);
	TupleTableSlot *slot = table_slot_create(rel, NULL);

	for (int i = 0; i < n; i++)
	{
		Datum		key[INDEX_MAX_KEYS];
		bool		isnull;

		for (int k = 0; k < nkeys; k++)
			key[k] = keys[k][i];
		memset(&found[i], 0, sizeof(DcFoundRow));
		if (!find_latest(rel, index, key, nkeys, slot, &found[i].held))
			continue;
		found[i].found = true;
		found[i].doc = datumCopy(slot_getattr(slot, doc_att, &isnull), false, -1);
		if (revision_att != InvalidAttrNumber)
			found[i].revision = DatumGetInt64(slot_getattr(slot, revision_att, &isnull));
		if (request_att != InvalidAttrNumber)
			found[i].request = datumCopy(slot_getattr(slot, request_att, &isnull), false, -1);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
}

/* The stored state and revision of each entity (mall_ids[i], user_ids[i]). */
void
dc_batch_find_states(int n, const Datum *mall_ids, const Datum *user_ids, DcFoundRow *found)
{
	Oid			pkey;
	Relation	rel;

	if (n == 0)
		return;
	rel = dc_open_entity_state(AccessShareLock, &pkey);
	find_rows(rel, pkey, (Datum *[]) {unconstify(Datum *, mall_ids), unconstify(Datum *, user_ids)},
			  n, ENTITY_STATE, ENTITY_REVISION, InvalidAttrNumber, found);
	table_close(rel, NoLock);
}

/* The logged reply and request of each command (mall, user, command_id). */
void
dc_batch_find_replies(int n, const Datum *mall_ids, const Datum *user_ids,
					  const Datum *command_ids, DcFoundRow *found)
{
	Oid			pkey;
	Relation	rel;

	if (n == 0)
		return;
	rel = dc_open_command_log(AccessShareLock, &pkey);
	find_rows(rel, pkey, (Datum *[]) {unconstify(Datum *, mall_ids), unconstify(Datum *, user_ids),
			  unconstify(Datum *, command_ids)},
			  n, LOG_REPLY, InvalidAttrNumber, LOG_REQUEST, found);
	table_close(rel, NoLock);
}

/* The error of a row another transaction held past lock_timeout. */
static void
raise_held(Datum mall_id, Datum user_id)
{
	ereport(ERROR,
			errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			errmsg("entity (%s, %s) is held by another transaction",
				   TextDatumGetCString(mall_id), TextDatumGetCString(user_id)),
			errdetail("A former owner of its shard, paused in its batch, may have it open."));
}

/*
 * Rows (what, i + 1, doc, revision or NULL, request or NULL) of those
 * found; an error for one held.
 */
static void
put_found_rows(ReturnSetInfo *rsinfo, const char *what, const DcFoundRow *found, int n,
			   bool replies, const Datum *mall_ids, const Datum *user_ids)
{
	for (int i = 0; i < n; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {0};

		if (found[i].held)
			raise_held(mall_ids[i], user_ids[i]);
		if (!found[i].found)
			continue;
		values[0] = CStringGetTextDatum(what);
		values[1] = Int32GetDatum(i + 1);
		values[2] = found[i].doc;
		values[3] = Int64GetDatum(found[i].revision);
		nulls[3] = replies;
		values[4] = found[i].request;
		nulls[4] = !replies;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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
	DcFoundRow *found;

	dc_require_arguments(fcinfo, "durable_cluster.load_batch", -1);
	n = array_argument(fcinfo, 0, TEXTOID, -1, &mall_ids);
	array_argument(fcinfo, 1, TEXTOID, n, &user_ids);
	nlogs = array_argument(fcinfo, 2, TEXTOID, -1, &log_mall_ids);
	array_argument(fcinfo, 3, TEXTOID, nlogs, &log_user_ids);
	array_argument(fcinfo, 4, TEXTOID, nlogs, &command_ids);
	InitMaterializedSRF(fcinfo, 0);

	found = palloc(sizeof(DcFoundRow) * Max(Max(n, nlogs), 1));
	dc_batch_begin();
	dc_batch_find_states(n, mall_ids, user_ids, found);
	put_found_rows(rsinfo, "state", found, n, false, mall_ids, user_ids);
	dc_batch_find_replies(nlogs, log_mall_ids, log_user_ids, command_ids, found);
	put_found_rows(rsinfo, "reply", found, nlogs, true, log_mall_ids, log_user_ids);
	/* a node of this server may have committed them without the flush */
	dc_wait_durable_now();
	return (Datum) 0;
}

/* The fields of durable_cluster.batch, in its order. */
enum
{
	BATCH_NODE_NAME, BATCH_FENCE, BATCH_ENTITIES, BATCH_LOG, BATCH_SAGA_STEPS, BATCH_NATTS
};

/*
 * The fields of a record of tupdesc, into values[]; none may be NULL.  The
 * record is the batch itself (part NULL) or element number element of one
 * of its parts.
 */
static void
record_fields(HeapTupleHeader record, TupleDesc tupdesc, Datum *values, bool *nulls,
			  const char *part, int element)
{
	HeapTupleData tuple;

	tuple.t_data = record;
	tuple.t_len = HeapTupleHeaderGetDatumLength(record);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	heap_deform_tuple(&tuple, tupdesc, values, nulls);
	for (int k = 0; k < tupdesc->natts; k++)
		if (nulls[k])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					part == NULL
					? errmsg("field %s of durable_cluster.batch is NULL",
							 NameStr(TupleDescAttr(tupdesc, k)->attname))
					: errmsg("field %s of element %d of the %s of durable_cluster.batch is NULL",
							 NameStr(TupleDescAttr(tupdesc, k)->attname), element, part));
}

/*
 * The elements of a part of a batch, an array of a composite type natts
 * wide, as rows of their fields.  No element and no field may be NULL.
 */
static Datum *
part_rows(Datum array, const char *part, int natts, int *n)
{
	ArrayType  *arr = DatumGetArrayTypeP(array);
	Oid			elemtype = ARR_ELEMTYPE(arr);
	TupleDesc	tupdesc = lookup_rowtype_tupdesc(elemtype, -1);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *elemnulls;
	Datum	   *rows;
	bool	   *nulls = palloc(sizeof(bool) * natts);

	if (tupdesc->natts != natts)
		elog(ERROR, "the %s of durable_cluster.batch have %d fields, not %d",
			 part, tupdesc->natts, natts);
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, &elems, &elemnulls, n);
	rows = palloc(sizeof(Datum) * natts * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (elemnulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("element %d of the %s of durable_cluster.batch is NULL", i + 1, part));
		record_fields(DatumGetHeapTupleHeader(elems[i]), tupdesc, &BATCH_FIELD(rows, natts, i, 0),
					  nulls, part, i + 1);
	}
	ReleaseTupleDesc(tupdesc);
	return rows;
}

/* The batch of durable_cluster.write_batch(durable_cluster.batch). */
static void
batch_from_record(FunctionCallInfo fcinfo, DcBatchRows *b)
{
	HeapTupleHeader batch;
	TupleDesc	tupdesc;
	Datum		values[BATCH_NATTS];
	bool		nulls[BATCH_NATTS];

	dc_require_arguments(fcinfo, "durable_cluster.write_batch", -1);
	batch = PG_GETARG_HEAPTUPLEHEADER(0);
	tupdesc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(batch),
									 HeapTupleHeaderGetTypMod(batch));
	if (tupdesc->natts != BATCH_NATTS)
		elog(ERROR, "durable_cluster.batch has %d fields, not %d", tupdesc->natts, BATCH_NATTS);
	record_fields(batch, tupdesc, values, nulls, NULL, 0);
	ReleaseTupleDesc(tupdesc);

	b->node_name = DatumGetTextPP(values[BATCH_NODE_NAME]);
	b->fence = part_rows(values[BATCH_FENCE], "fence", FENCE_NATTS, &b->nfence);
	b->entities = part_rows(values[BATCH_ENTITIES], "entities", WRITE_NATTS, &b->nentities);
	b->log = part_rows(values[BATCH_LOG], "log", ENTRY_NATTS, &b->nlogs);
	b->saga_steps = part_rows(values[BATCH_SAGA_STEPS], "saga_steps", STEP_NATTS, &b->nsagas);
}

/*
 * A part of a batch of 0.1's form: natts array arguments from argno on,
 * one per field, of the same length, as rows.
 */
static Datum *
part_from_arrays(FunctionCallInfo fcinfo, int argno, const Oid *types, int natts, int *n)
{
	Datum	   *columns[WRITE_NATTS];
	Datum	   *rows;

	Assert(natts <= WRITE_NATTS);
	*n = array_argument(fcinfo, argno, types[0], -1, &columns[0]);
	for (int k = 1; k < natts; k++)
		array_argument(fcinfo, argno + k, types[k], *n, &columns[k]);
	rows = palloc(sizeof(Datum) * natts * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		for (int k = 0; k < natts; k++)
			BATCH_FIELD(rows, natts, i, k) = columns[k][i];
	return rows;
}

/*
 * The batch of 0.1's durable_cluster.write_batch(node, shards, epochs,
 * mall_ids, user_ids, entity_shards, states, revisions, old_revisions,
 * log_mall_ids, log_user_ids, command_ids, replies, requests,
 * saga_records, saga_steps): the fields of each part as parallel arrays.
 */
static void
batch_from_arrays(FunctionCallInfo fcinfo, DcBatchRows *b)
{
	dc_require_arguments(fcinfo, "durable_cluster.write_batch", -1);
	b->node_name = PG_GETARG_TEXT_PP(0);
	b->fence = part_from_arrays(fcinfo, 1, (Oid[]) {INT4OID, INT8OID},
								FENCE_NATTS, &b->nfence);
	b->entities = part_from_arrays(fcinfo, 3,
								   (Oid[]) {TEXTOID, TEXTOID, INT4OID, JSONBOID, INT8OID, INT8OID},
								   WRITE_NATTS, &b->nentities);
	b->log = part_from_arrays(fcinfo, 9, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID},
							  ENTRY_NATTS, &b->nlogs);
	b->saga_steps = part_from_arrays(fcinfo, 14, (Oid[]) {JSONBOID, TEXTOID},
									 STEP_NATTS, &b->nsagas);
}

/* Field k of each of the n rows of a part, as an array of type. */
static Datum
field_array(const Datum *part, int natts, int n, int k, Oid type)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int16		typlen;
	bool		typbyval;
	char		typalign;

	for (int i = 0; i < n; i++)
		elems[i] = BATCH_FIELD(part, natts, i, k);
	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, type, typlen, typbyval, typalign));
}

/*
 * Keep no more than durable_cluster.command_log_per_entity entries of each
 * entity the batch logged a reply for: its newest ones (seq orders them).
 * Run after the batch's entries went in, so that the cap holds after every
 * batch, whatever commands run at once.  For each entity, a backward scan
 * of command_log_entity_seq passes its newest entries and deletes those
 * after them, usually one, as the rest of the batch is written: by index,
 * without a plan (a DELETE joining the entities' horizons with the log was
 * planned as a hash join over the whole log whenever its statistics made
 * an entity look big).
 *
 * An entry another transaction is deleting or holds (the saga worker's
 * retention; a paused former owner's cap) is left, not waited for: a later
 * batch of the entity deletes it, if retention has not.  No trigger fires
 * for these deletes.
 */
static void
cap_command_log(Relation log_rel, const DcBatchRows *b)
{
	Oid			index_oid = get_relname_relid("command_log_entity_seq",
											  RelationGetNamespace(log_rel));
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	CommandId	cid;

	if (!OidIsValid(index_oid))
		elog(ERROR, "durable_cluster.command_log_entity_seq does not exist");
	index = index_open(index_oid, RowExclusiveLock);
	slot = table_slot_create(log_rel, NULL);
	/* the entries the batch just added count */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	cid = GetCurrentCommandId(true);

	for (int i = 0; i < b->nlogs; i++)
	{
		Datum	   *entry = &BATCH_FIELD(b->log, ENTRY_NATTS, i, 0);
		ScanKeyData key[2];
		IndexScanDesc scan;
		bool		seen = false;
		int			kept = 0;

		/* each entity once */
		for (int j = 0; j < i && !seen; j++)
		{
			Datum	   *earlier = &BATCH_FIELD(b->log, ENTRY_NATTS, j, 0);

			seen = DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
														entry[ENTRY_MALL_ID],
														earlier[ENTRY_MALL_ID])) &&
				DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
													 entry[ENTRY_USER_ID],
													 earlier[ENTRY_USER_ID]));
		}
		if (seen)
			continue;

		StaticAssertStmt(ENTRY_USER_ID == ENTRY_MALL_ID + 1, "the ids are the key, in order");
		dc_key_scan_keys(index, &entry[ENTRY_MALL_ID], 2, key);
		scan = dc_index_beginscan(log_rel, index, snapshot, 2, 0);
		index_rescan(scan, key, 2, NULL, 0);
		while (index_getnext_slot(scan, BackwardScanDirection, slot))
		{
			TM_FailureData tmfd;

			if (++kept <= dc_command_log_per_entity)
				continue;
			(void) table_tuple_delete(log_rel, &slot->tts_tid, cid, snapshot, InvalidSnapshot,
									  false, &tmfd, false);
		}
		index_endscan(scan);
	}

	UnregisterSnapshot(snapshot);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
}

/*
 * Add the command_log entries of a batch, as range table entry 2 of
 * estate.
 */
static void
log_replies(EState *estate, Relation log_rel, const DcBatchRows *b)
{
	ResultRelInfo *rri = result_relation(estate, log_rel, 2);
	TupleTableSlot *log = table_slot_create(log_rel, &estate->es_tupleTable);
	Oid			seq_oid = get_relname_relid("command_log_seq", RelationGetNamespace(log_rel));

	if (!OidIsValid(seq_oid))
		elog(ERROR, "durable_cluster.command_log_seq does not exist");
	for (int i = 0; i < b->nlogs; i++)
	{
		Datum	   *entry = &BATCH_FIELD(b->log, ENTRY_NATTS, i, 0);

		ExecClearTuple(log);
		log->tts_values[LOG_MALL_ID - 1] = entry[ENTRY_MALL_ID];
		log->tts_values[LOG_USER_ID - 1] = entry[ENTRY_USER_ID];
		log->tts_values[LOG_COMMAND_ID - 1] = entry[ENTRY_COMMAND_ID];
		log->tts_values[LOG_SEQ - 1] = Int64GetDatum(nextval_internal(seq_oid, false));
		log->tts_values[LOG_REPLY - 1] = entry[ENTRY_REPLY];
		log->tts_values[LOG_REQUEST - 1] = entry[ENTRY_REQUEST];
		memset(log->tts_isnull, false, sizeof(bool) * LOG_NATTS);
		ExecStoreVirtualTuple(log);
		ExecSimpleRelationInsert(rri, estate, log);
	}
}

/* The rows of durable_cluster.sagas for the transfer steps of a batch. */
static void
record_saga_steps(const DcBatchRows *b)
{
	Datum		records = field_array(b->saga_steps, STEP_NATTS, b->nsagas, STEP_RECORD, JSONBOID);
	Datum		steps = field_array(b->saga_steps, STEP_NATTS, b->nsagas, STEP_STEP, TEXTOID);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT durable_cluster.record_saga_steps($1, $2)",
							  2, (Oid[]) {JSONBARRAYOID, TEXTARRAYOID},
							  (Datum[]) {records, steps}, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record the saga steps");
	SPI_finish();
}

/*
 * Write the batch's entities and command log entries with the executor's
 * single-row routines, as the logical replication apply worker does; then
 * cap the log of the entities it logged for and record the transfer
 * steps.  An entity not at the revision the node holds fails the batch.
 * One that another transaction holds open past the batch's wait is left
 * out and listed in *held (by its row in the batch); the caller must then
 * roll back whatever was written.
 */
static void
write_rows(const DcBatchRows *b, List **held)
{
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
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int			stale = 0;

	/* an executor state for single-row writes, as the apply worker sets up */
	rel = dc_open_entity_state(RowExclusiveLock, &pkey);
	index = index_open(pkey, RowExclusiveLock);
	/* the command log only when the batch has replies to log */
	log_rel = b->nlogs > 0 ? dc_open_command_log(RowExclusiveLock, &log_pkey) : NULL;
	range_table = list_make1(range_table_entry(rel));
	if (log_rel)
		range_table = lappend(range_table, range_table_entry(log_rel));
	estate = CreateExecutorState();
	estate->es_output_cid = GetCurrentCommandId(true);
	estate->es_snapshot = GetActiveSnapshot();
	dc_init_range_table(estate, range_table);
	rri = result_relation(estate, rel, 1);
	dc_epq_init(&epq, estate);
	AfterTriggerBeginQuery();
	old = table_slot_create(rel, &estate->es_tupleTable);
	new = table_slot_create(rel, &estate->es_tupleTable);

	for (int i = 0; i < b->nentities && stale == 0; i++)
	{
		Datum	   *entity = &BATCH_FIELD(b->entities, WRITE_NATTS, i, 0);
		int64		old_revision = DatumGetInt64(entity[WRITE_OLD_REVISION]);
		bool		row_held;

		ExecClearTuple(new);
		new->tts_values[ENTITY_MALL_ID - 1] = entity[WRITE_MALL_ID];
		new->tts_values[ENTITY_USER_ID - 1] = entity[WRITE_USER_ID];
		new->tts_values[ENTITY_SHARD_ID - 1] = entity[WRITE_SHARD_ID];
		new->tts_values[ENTITY_STATE - 1] = entity[WRITE_STATE];
		new->tts_values[ENTITY_REVISION - 1] = entity[WRITE_REVISION];
		new->tts_values[ENTITY_UPDATED_AT - 1] = now;
		memset(new->tts_isnull, false, sizeof(bool) * ENTITY_NATTS);
		ExecStoreVirtualTuple(new);

		/*
		 * As last committed, after any transaction that has it open (a
		 * paused former owner's) ended; a new one must not exist.  No lock
		 * is taken: another transaction that wrote it from now on can only
		 * be a former owner's, which finds its shard moved and rolls back
		 * (the update waits for it).
		 */
		if (find_latest(rel, index, &entity[WRITE_MALL_ID], 2, old, &row_held))
		{
			bool		isnull;

			if (DatumGetInt64(slot_getattr(old, ENTITY_REVISION, &isnull)) != old_revision)
			{
				stale = i + 1;
				break;
			}
			ExecSimpleRelationUpdate(rri, estate, &epq, old, new);
		}
		else if (row_held)
			*held = lappend_int(*held, i);
		else if (old_revision == 0)
			ExecSimpleRelationInsert(rri, estate, new);
		else
		{
			stale = i + 1;
			break;
		}
	}

	if (stale > 0)
	{
		Datum	   *entity = &BATCH_FIELD(b->entities, WRITE_NATTS, stale - 1, 0);

		ereport(ERROR,
				errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				errmsg("stored state changed under the owning node"),
				errdetail("Entity (%s, %s) is not at revision " INT64_FORMAT ", the one the node holds.",
						  TextDatumGetCString(entity[WRITE_MALL_ID]),
						  TextDatumGetCString(entity[WRITE_USER_ID]),
						  DatumGetInt64(entity[WRITE_OLD_REVISION])));
	}

	/* a held entity: the batch is rolled back and applied again without it */
	if (log_rel && *held == NIL)
		log_replies(estate, log_rel, b);

	AfterTriggerEndQuery(estate);
	EvalPlanQualEnd(&epq);
	/* the indexes of the result relations, and what AFTER triggers opened */
	ExecCloseResultRelations(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	if (log_rel && *held == NIL)
		cap_command_log(log_rel, b);
	if (log_rel)
		table_close(log_rel, NoLock);

	if (b->nsagas > 0 && *held == NIL)
		record_saga_steps(b);
}

/*
 * Fence and write a batch, in the caller's transaction.  Returns the
 * shards found fenced, NIL if none; *held lists the entities (rows of
 * b->entities) another transaction held open, which were not written.  If
 * either list is not empty, nothing of the batch may commit: with
 * DC_FENCE_LOCK_FIRST nothing was written if shards were fenced; with
 * DC_FENCE_CHECK_LAST the rows were written, and the caller must roll the
 * transaction back.
 */
List *
dc_batch_store(const DcBatchRows *b, DcFenceMode mode, List **held)
{
	List	   *fenced;

	*held = NIL;
	if (mode == DC_FENCE_LOCK_FIRST)
	{
		fenced = dc_batch_fenced(b, true);
		if (fenced == NIL)
			write_rows(b, held);
		return fenced;
	}

	/* the fence as it is once every row is written: a snapshot taken now */
	write_rows(b, held);
	PushActiveSnapshot(GetLatestSnapshot());
	fenced = dc_batch_fenced(b, false);
	PopActiveSnapshot();
	return fenced;
}

/*
 * The result of write_batch: NULL when the batch was written, or the
 * shards found fenced, and then it wrote nothing.
 */
static Datum
write_batch_result(FunctionCallInfo fcinfo, const DcBatchRows *b)
{
	List	   *held;
	List	   *fenced;
	Datum	   *elems;
	ListCell   *lc;
	int			i = 0;

	dc_batch_begin();
	fenced = dc_batch_store(b, DC_FENCE_LOCK_FIRST, &held);
	if (held != NIL)
	{
		Datum	   *entity = &BATCH_FIELD(b->entities, WRITE_NATTS, linitial_int(held), 0);

		raise_held(entity[WRITE_MALL_ID], entity[WRITE_USER_ID]);
	}

	if (fenced == NIL)
		PG_RETURN_NULL();
	elems = palloc(sizeof(Datum) * list_length(fenced));
	foreach(lc, fenced)
		elems[i++] = Int32GetDatum(lfirst_int(lc));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, i, INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

/* durable_cluster.write_batch(durable_cluster.batch) */
Datum
dc_write_batch_0_2(PG_FUNCTION_ARGS)
{
	DcBatchRows	b;

	batch_from_record(fcinfo, &b);
	return write_batch_result(fcinfo, &b);
}

/*
 * 0.1's durable_cluster.write_batch(), of sixteen arrays: the SQL objects
 * of 0.1 name this symbol, and 0.1 nodes still call it on a store updated
 * to 0.2 while their servers wait for their restart.
 */
Datum
dc_write_batch(PG_FUNCTION_ARGS)
{
	DcBatchRows	b;

	batch_from_arrays(fcinfo, &b);
	return write_batch_result(fcinfo, &b);
}
