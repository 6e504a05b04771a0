/*-------------------------------------------------------------------------
 *
 * store_batch.h
 *	  A node's batch as the store writes it: the plain structs a node fills,
 *	  the batch as rows of datums that store_batch.c fences and writes, and
 *	  the loads of committed states and logged replies.
 *
 * Every transport (store_transport.h) ends here: the libpq one through
 * the SQL functions durable_cluster.load_batch() and write_batch(), run by
 * a backend of the store, and the in-process one by calling these
 * functions in the node's own transaction.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_STORE_BATCH_H
#define DC_STORE_BATCH_H

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
	bool		held;			/* another transaction has it open: not loaded */
} DcEntityLoad;

/* A command sent with a command_id and its reply (see command_log). */
typedef struct DcCommandLog
{
	const char *mall_id;
	const char *user_id;
	const char *command_id;
	Jsonb	   *reply;			/* in a lookup: the stored reply, NULL if none */
	Jsonb	   *request;		/* dc_command_request(); in a lookup, the stored one */
	bool		held;			/* in a lookup: another transaction has it open */
} DcCommandLog;

/* A step of a transfer applied by a batch (saga.c), for its saga's row. */
typedef struct DcSagaStep
{
	Jsonb	   *record;			/* saga_id, from_ and to_ ids, amount */
	const char *step;
} DcSagaStep;

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

/*
 * The same batch as the store reads it: each part as rows of its fields,
 * row i of a part being part[i * natts] ... part[i * natts + natts - 1],
 * in the order the types durable_cluster.batch_* declare them.
 */
typedef struct DcBatchRows
{
	text	   *node_name;
	Datum	   *fence;			/* the shards, at the epochs the node holds */
	int			nfence;
	Datum	   *entities;		/* the entities written */
	int			nentities;
	Datum	   *log;			/* the command log entries added */
	int			nlogs;
	Datum	   *saga_steps;		/* the transfer steps applied */
	int			nsagas;
} DcBatchRows;

enum
{
	FENCE_SHARD_ID, FENCE_EPOCH, FENCE_NATTS
};
enum
{
	WRITE_MALL_ID, WRITE_USER_ID, WRITE_SHARD_ID, WRITE_STATE, WRITE_REVISION,
	WRITE_OLD_REVISION, WRITE_NATTS
};
enum
{
	ENTRY_MALL_ID, ENTRY_USER_ID, ENTRY_COMMAND_ID, ENTRY_REPLY, ENTRY_REQUEST, ENTRY_NATTS
};
enum
{
	STEP_RECORD, STEP_STEP, STEP_NATTS
};

/* field k of row i of a part natts wide */
#define BATCH_FIELD(part, natts, i, k)	((part)[(i) * (natts) + (k)])

/*
 * When the fence is checked, and how:
 *
 * DC_FENCE_LOCK_FIRST: before anything is written, each shard row locked
 * FOR SHARE, which a change of owner waits for until the batch's commit.
 * For a batch written by a store backend, which a paused node cannot stop.
 *
 * DC_FENCE_CHECK_LAST: after the rows are written, in a snapshot of its
 * own, without a lock: a node's own transaction, which may be paused at
 * any point, holds nothing a change of owner waits for.  A node paused
 * between the check and its commit's WAL record (a few microseconds of
 * work) may commit after its shard moved; each entity it wrote is then
 * still exact, being locked and compared with the revision the node held
 * (docs/design.md, "A paused node").
 */
typedef enum DcFenceMode
{
	DC_FENCE_LOCK_FIRST,
	DC_FENCE_CHECK_LAST
} DcFenceMode;

/* A row found by a load: its document, and a revision or a request. */
typedef struct DcFoundRow
{
	bool		found;
	bool		held;			/* another transaction has it open: not read */
	Datum		doc;			/* state, or logged reply */
	int64		revision;		/* of a state */
	Datum		request;		/* of a logged reply */
} DcFoundRow;

extern void dc_batch_begin(void);
extern void dc_batch_find_states(int n, const Datum *mall_ids, const Datum *user_ids,
								 DcFoundRow *found);
extern void dc_batch_find_replies(int n, const Datum *mall_ids, const Datum *user_ids,
								  const Datum *command_ids, DcFoundRow *found);
extern List *dc_batch_store(const DcBatchRows *b, DcFenceMode mode, List **held);
extern List *dc_batch_fenced(const DcBatchRows *b, bool lock);

#endif							/* DC_STORE_BATCH_H */
