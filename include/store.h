/*-------------------------------------------------------------------------
 *
 * store.h
 *	  Node access to the cluster store: members, shard map and entity state.
 *
 * Every call is one statement sent over the node's libpq connection to the
 * store, so each runs in a transaction of its own on a backend of the
 * store, except in a batch with registered commands, which node.c wraps
 * in dc_store_begin_batch / dc_store_end_batch.  Errors are raised as
 * ERROR with the store's SQLSTATE.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_STORE_H
#define DC_STORE_H

#include "entity.h"

/* One entity write of a batch. */
typedef struct DcEntityWrite
{
	const char *mall_id;
	const char *user_id;
	int			shard;
	Jsonb	   *state_doc;
	int64		revision;		/* new revision */
	int64		old_revision;	/* revision it replaces, 0 = new row */
} DcEntityWrite;

/* An entity to load: ids in, state out. */
typedef struct DcEntityLoad
{
	const char *mall_id;
	const char *user_id;
	DcEntityState state;		/* initial state if never stored */
} DcEntityLoad;

/* A command sent with a command_id and its reply (see command_log). */
typedef struct DcCommandLog
{
	const char *mall_id;
	const char *user_id;
	const char *command_id;
	Jsonb	   *reply;			/* in a lookup: the stored reply, NULL if none */
	Jsonb	   *request;		/* dc_command_request(); in a lookup, the stored one */
} DcCommandLog;

extern void dc_store_init(const char *node_name);
extern void dc_store_set_member(const char *name, int64 incarnation);

extern bool dc_store_announced(void);
extern void dc_store_note_cluster_role(void);
extern void dc_store_wait_idle(long timeout_ms);
extern int	dc_store_other_sessions(void);
extern Oid	dc_store_extension(char **version);
extern int64 dc_store_join(const char *name, int node_index, const char *address,
						   const char *roles);
extern bool dc_store_heartbeat(const char *name, int64 incarnation);
extern void dc_store_leaving(const char *name, int64 incarnation);
extern void dc_store_leave(const char *name, int64 incarnation);
extern void dc_store_reconcile(void);
extern bool dc_store_refresh_map(Oid extension);

/* A step of a transfer applied by a batch (saga.c), for its saga's row. */
typedef struct DcSagaStep
{
	Jsonb	   *record;			/* saga_id, from_ and to_ ids, amount */
	const char *step;
} DcSagaStep;

extern void dc_store_load_batch(DcEntityLoad *loads, int nloads,
								DcCommandLog *lookups, int nlookups);
/* What a batch writes, and the shards it holds the fence of. */
typedef struct DcBatchWrite
{
	int		   *shards;			/* every shard the batch touched */
	int64	   *epochs;			/* at the epoch the node holds */
	int			nshards;
	DcEntityWrite *writes;		/* changed entities */
	int			nwrites;
	DcCommandLog *logs;			/* replies of commands with a command_id */
	int			nlogs;
	DcSagaStep *sagas;			/* transfer steps applied */
	int			nsagas;
} DcBatchWrite;

extern int	dc_store_write_batch(const char *name, const DcBatchWrite *batch, int *fenced);

extern void dc_store_begin_batch(void);
extern void dc_store_end_batch(bool commit);
extern void dc_store_abandon_batch(void);
extern Jsonb *dc_store_run_command(const DcCommand *cmd, Jsonb *state, int *sqlstate,
								   char **message);

#endif							/* DC_STORE_H */
