/*-------------------------------------------------------------------------
 *
 * state_table.h
 *	  Direct access to the extension's tables by primary key, without
 *	  planning or executor start-up: used by durable_cluster.write_batch(),
 *	  dc_get_state() and the lookup of registered commands.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_STATE_TABLE_H
#define DC_STATE_TABLE_H

#include "access/skey.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"

/* column numbers, as durable_cluster--0.1.sql creates the tables */
enum
{
	SHARDS_SHARD_ID = 1, SHARDS_NODE, SHARDS_EPOCH, SHARDS_NATTS = SHARDS_EPOCH
};
enum
{
	ENTITY_MALL_ID = 1, ENTITY_USER_ID, ENTITY_SHARD_ID, ENTITY_STATE,
	ENTITY_REVISION, ENTITY_UPDATED_AT, ENTITY_NATTS = ENTITY_UPDATED_AT
};
enum
{
	LOG_MALL_ID = 1, LOG_USER_ID, LOG_COMMAND_ID, LOG_SEQ, LOG_REPLY, LOG_REQUEST,
	LOG_NATTS = LOG_REQUEST
};
enum
{
	COMMANDS_NAME = 1, COMMANDS_HANDLER, COMMANDS_REGISTERED_BY, COMMANDS_REGISTERED_AT,
	COMMANDS_NATTS = COMMANDS_REGISTERED_AT
};
enum
{
	TENANT_ROLE_NAME = 1, TENANT_MALL_ID, TENANT_COMMANDS, TENANT_NATTS = TENANT_COMMANDS
};

extern Relation dc_open_shards(LOCKMODE lockmode, Oid *pkey);
extern Relation dc_open_entity_state(LOCKMODE lockmode, Oid *pkey);
extern Relation dc_open_command_log(LOCKMODE lockmode, Oid *pkey);
extern Relation dc_open_commands(LOCKMODE lockmode, Oid *pkey);
extern Relation dc_open_tenant_grants(LOCKMODE lockmode, Oid *pkey);
extern Relation dc_open_pending_commands(LOCKMODE lockmode, Oid *pkey);
extern int	dc_read_number_of_shards(void);
extern bool dc_extension_is_current(Oid *extension);
extern void dc_key_scan_keys(Relation index, const Datum *keys, int nkeys, ScanKey key);
extern bool dc_find_by_key(Relation rel, Relation index, const Datum *keys, int nkeys,
						   TupleTableSlot *slot);
extern bool dc_find_latest_by_key(Relation rel, Relation index, const Datum *keys, int nkeys,
								  TupleTableSlot *slot, TransactionId *open);

#endif							/* DC_STATE_TABLE_H */
