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

#include "access/xlogdefs.h"

#include "entity.h"
#include "store_batch.h"

extern void dc_store_init(const char *node_name, bool in_process);
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

extern void dc_store_load_batch(DcEntityLoad *loads, int nloads,
								DcCommandLog *lookups, int nlookups);
extern int	dc_store_write_batch(const char *name, const DcBatchWrite *batch, int *fenced,
								 int *held, int *nheld);

extern void dc_store_begin_batch(void);
extern void dc_store_end_batch(bool commit);
extern void dc_store_release_batch(void);
extern XLogRecPtr dc_store_durable_lsn(void);
extern Jsonb *dc_store_run_command(const DcCommand *cmd, Jsonb *state, int *sqlstate,
								   char **message);

#endif							/* DC_STORE_H */
