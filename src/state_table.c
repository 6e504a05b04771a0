/*-------------------------------------------------------------------------
 *
 * state_table.c
 *	  Direct access to the extension's tables by primary key.
 *
 * A node's batch is a handful of primary-key lookups and writes, and
 * dc_get_state is one lookup.  As SQL, each pays an executor start-up
 * (planning aside), which costs more than the lookup itself; so both go
 * to the index and the table directly, as the logical replication apply
 * worker does for the rows it receives.  The tables' column order is the
 * one the extension script creates; it is checked when a table is opened.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/multixact.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "pg_compat.h"
#include "settings.h"
#include "state_table.h"

static Relation
open_table(const char *name, const char *const *columns, int ncolumns,
		   LOCKMODE lockmode, Oid *pkey)
{
	Oid			nsp = get_namespace_oid("durable_cluster", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(name, nsp) : InvalidOid;
	Relation	rel;
	TupleDesc	desc;

	/* say so plainly: DROP EXTENSION may run while commands are under way */
	if (!OidIsValid(relid))
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("durable_cluster.%s does not exist: the extension is not installed", name),
				errhint("CREATE EXTENSION durable_cluster in database \"%s\".", dc_database));
	rel = table_open(relid, lockmode);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < ncolumns; i++)
		if (desc->natts < ncolumns ||
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), columns[i]) != 0)
			elog(ERROR, "durable_cluster.%s does not have the columns this library expects",
				 name);
	*pkey = dc_primary_key_index(rel);
	if (!OidIsValid(*pkey))
		elog(ERROR, "durable_cluster.%s has no primary key", name);
	return rel;
}

Relation
dc_open_shards(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[SHARDS_NATTS] = {"shard_id", "node", "epoch"};

	return open_table("shards", columns, SHARDS_NATTS, lockmode, pkey);
}

Relation
dc_open_entity_state(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[ENTITY_NATTS] =
	{"mall_id", "user_id", "shard_id", "state", "revision", "updated_at"};

	return open_table("entity_state", columns, ENTITY_NATTS, lockmode, pkey);
}

Relation
dc_open_command_log(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[LOG_NATTS] =
	{"mall_id", "user_id", "command_id", "seq", "reply", "request"};

	return open_table("command_log", columns, LOG_NATTS, lockmode, pkey);
}

Relation
dc_open_commands(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[COMMANDS_NATTS] =
	{"name", "handler", "registered_by", "registered_at"};

	return open_table("commands", columns, COMMANDS_NATTS, lockmode, pkey);
}

Relation
dc_open_tenant_grants(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[TENANT_NATTS] = {"role_name", "mall_id", "commands"};

	return open_table("tenant_grants", columns, TENANT_NATTS, lockmode, pkey);
}

Relation
dc_open_pending_commands(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[] =
	{"id", "mall_id", "user_id", "command", "payload", "command_id", "role_name"};

	return open_table("pending_commands", columns, lengthof(columns), lockmode, pkey);
}

/*
 * settings.number_of_shards, read without privilege checks (it is no
 * secret, and dc_shard_id is for clients too).
 */
int
dc_read_number_of_shards(void)
{
	static const char *const columns[] = {"singleton", "number_of_shards", "map_version"};
	Oid			pkey;
	Relation	rel = open_table("settings", columns, lengthof(columns), AccessShareLock, &pkey);
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	int			n = 0;
	bool		isnull;

	if (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		n = DatumGetInt32(slot_getattr(slot, 2, &isnull));
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	if (n == 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("durable_cluster.settings has no row"),
				errhint("Put it back with the number of shards the data was written with."));
	return n;
}

/*
 * Scan keys of index (on text or integer columns, as the extension's are)
 * for its first nkeys columns equal to keys[0..nkeys-1].
 */
void
dc_key_scan_keys(Relation index, const Datum *keys, int nkeys, ScanKey key)
{
	Assert(nkeys <= IndexRelationGetNumberOfKeyAttributes(index));
	for (int i = 0; i < nkeys; i++)
	{
		Oid			type = index->rd_opcintype[i];

		if (type != TEXTOID && type != INT4OID)
			elog(ERROR, "key column %d of index \"%s\" is neither text nor integer",
				 i + 1, RelationGetRelationName(index));
		ScanKeyInit(&key[i], i + 1, BTEqualStrategyNumber,
					type == TEXTOID ? F_TEXTEQ : F_INT4EQ, keys[i]);
		key[i].sk_collation = index->rd_indcollation[i];
	}
}

/* The first row of index whose key starts with keys, as snapshot sees it. */
static bool
find_in(Relation rel, Relation index, const Datum *keys, int nkeys, Snapshot snapshot,
		TupleTableSlot *slot)
{
	ScanKeyData key[INDEX_MAX_KEYS];
	IndexScanDesc scan;
	bool		found;

	dc_key_scan_keys(index, keys, nkeys, key);
	scan = dc_index_beginscan(rel, index, snapshot, nkeys, 0);
	index_rescan(scan, key, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/*
 * A row whose primary key starts with keys[0..nkeys-1], as the active
 * snapshot sees it, into slot; false if there is none.
 */
bool
dc_find_by_key(Relation rel, Relation index, const Datum *keys, int nkeys,
			   TupleTableSlot *slot)
{
	return find_in(rel, index, keys, nkeys, GetActiveSnapshot(), slot);
}

/*
 * Another transaction that holds the row in slot locked (FOR UPDATE, or
 * a BEFORE trigger about to update it), InvalidTransactionId if none.  A
 * dirty snapshot shows a row only locked as not open.  The flags are read
 * without the buffer's lock: a lock taken or released meanwhile is
 * missed or seen late, which a write then waits out as it would anyway.
 */
static TransactionId
locker(TupleTableSlot *slot)
{
	HeapTupleHeader tuple = ExecFetchSlotHeapTuple(slot, false, NULL)->t_data;
	uint16		infomask = tuple->t_infomask;
	TransactionId xmax = HeapTupleHeaderGetRawXmax(tuple);

	if ((infomask & HEAP_XMAX_INVALID) || !HEAP_XMAX_IS_LOCKED_ONLY(infomask))
		return InvalidTransactionId;
	if (infomask & HEAP_XMAX_IS_MULTI)
	{
		MultiXactMember *members;
		int			n = GetMultiXactIdMembers(xmax, &members, false, true);

		for (int i = 0; i < n; i++)
			if (!TransactionIdIsCurrentTransactionId(members[i].xid) &&
				TransactionIdIsInProgress(members[i].xid))
				return members[i].xid;
		return InvalidTransactionId;
	}
	if (!TransactionIdIsCurrentTransactionId(xmax) && TransactionIdIsInProgress(xmax))
		return xmax;
	return InvalidTransactionId;
}

/*
 * The same row as the last transaction that wrote it committed it, or as
 * another transaction writes it now: seen with a dirty snapshot, as
 * RelationFindReplTupleByIndex sees it, but without a lock.  *open is the
 * transaction that has the row open (inserting, updating, deleting or
 * locking it), InvalidTransactionId if none; the row found is the last
 * committed one only when there is none.
 */
bool
dc_find_latest_by_key(Relation rel, Relation index, const Datum *keys, int nkeys,
					  TupleTableSlot *slot, TransactionId *open)
{
	SnapshotData dirty;
	bool		found;

	InitDirtySnapshot(dirty);
	found = find_in(rel, index, keys, nkeys, &dirty, slot);
	*open = !found ? InvalidTransactionId
		: TransactionIdIsValid(dirty.xmin) ? dirty.xmin
		: TransactionIdIsValid(dirty.xmax) ? dirty.xmax
		: locker(slot);
	return found;
}

/*
 * Is the extension installed in this database at this library's version
 * (DC_VERSION)?  *extension is its oid, InvalidOid if there is none.
 * The workers' rounds do nothing otherwise: during an upgrade the tables
 * may not be the ones this library knows (the nodes say so in the log).
 */
bool
dc_extension_is_current(Oid *extension)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		current = false;

	*extension = InvalidOid;
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("durable_cluster"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		version = heap_getattr(tup, Anum_pg_extension_extversion,
										   RelationGetDescr(rel), &isnull);

		*extension = ((Form_pg_extension) GETSTRUCT(tup))->oid;
		current = !isnull && strcmp(TextDatumGetCString(version), DC_VERSION) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return current;
}
