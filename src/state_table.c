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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "state_table.h"

static Relation
open_table(const char *name, const char *const *columns, int ncolumns,
		   LOCKMODE lockmode, Oid *pkey)
{
	Oid			nsp = get_namespace_oid("durable_cluster", false);
	Oid			relid = get_relname_relid(name, nsp);
	Relation	rel;
	TupleDesc	desc;

	if (!OidIsValid(relid))
		elog(ERROR, "durable_cluster.%s does not exist", name);
	rel = table_open(relid, lockmode);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < ncolumns; i++)
		if (desc->natts < ncolumns ||
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), columns[i]) != 0)
			elog(ERROR, "durable_cluster.%s does not have the columns this library expects",
				 name);
	*pkey = RelationGetPrimaryKeyIndex(rel);
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
	{"mall_id", "user_id", "command_id", "seq", "reply"};

	return open_table("command_log", columns, LOG_NATTS, lockmode, pkey);
}

Relation
dc_open_commands(LOCKMODE lockmode, Oid *pkey)
{
	static const char *const columns[COMMANDS_NATTS] =
	{"name", "handler", "registered_by", "registered_at"};

	return open_table("commands", columns, COMMANDS_NATTS, lockmode, pkey);
}

/*
 * The row whose primary key (all text columns, as in the extension's
 * tables) equals keys[0..nkeys-1], as the active snapshot sees it, into
 * slot; false if there is none.
 */
bool
dc_find_by_key(Relation rel, Relation index, const Datum *keys, int nkeys,
			   TupleTableSlot *slot)
{
	ScanKeyData key[INDEX_MAX_KEYS];
	IndexScanDesc scan;
	bool		found;

	Assert(nkeys == IndexRelationGetNumberOfKeyAttributes(index));
	for (int i = 0; i < nkeys; i++)
	{
		ScanKeyInit(&key[i], i + 1, BTEqualStrategyNumber, F_TEXTEQ, keys[i]);
		key[i].sk_collation = index->rd_indcollation[i];
	}
	scan = index_beginscan(rel, index, GetActiveSnapshot(), nkeys, 0);
	index_rescan(scan, key, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}
