/*-------------------------------------------------------------------------
 *
 * store.h
 *	  Access to the cluster store: members, shard map and entity state.
 *
 * Every function expects to run inside a transaction with SPI connected;
 * the caller decides where transactions begin and end.
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

extern Oid	dc_store_extension_oid(void);
extern void dc_store_forget_plans(void);

extern int64 dc_store_join(const char *name, int node_index, const char *address,
						   const char *roles);
extern void dc_store_leaving(const char *name, int64 incarnation);
extern bool dc_store_heartbeat(const char *name, int64 incarnation);
extern void dc_store_leave(const char *name, int64 incarnation);
extern void dc_store_reconcile(void);
extern bool dc_store_refresh_map(void);

extern void dc_store_fence(const char *name, int nshards, const int *shards,
						   const int64 *epochs, bool *owned);
extern bool dc_store_load_entity(const char *mall_id, const char *user_id,
								 DcEntityState *state);
extern void dc_store_write_batch(const DcEntityWrite *writes, int n);

#endif							/* DC_STORE_H */
