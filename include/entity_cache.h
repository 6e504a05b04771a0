/*-------------------------------------------------------------------------
 *
 * entity_cache.h
 *	  A node's in-memory entities: committed states by (mall_id, user_id),
 *	  least recently used first, and their passivation.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_ENTITY_CACHE_H
#define DC_ENTITY_CACHE_H

#include "lib/ilist.h"
#include "utils/hsearch.h"

#include "entity.h"

typedef struct EntityKey
{
	uint16		mall_len;
	uint16		user_len;
	char		ids[2 * DC_MAX_ID_BYTES];	/* mall_id then user_id, no terminators */
} EntityKey;

typedef struct CachedEntity
{
	EntityKey	key;			/* hash key, must be first */
	int			shard;
	int			batch_index;	/* index in the current batch, -1 if none (node.c) */
	DcEntityState state;		/* last committed state */
	dlist_node	lru;			/* in the cache's LRU list */
	TimestampTz last_used;		/* when a batch last used it */
} CachedEntity;

extern void dc_cache_reset(void);
extern CachedEntity *dc_cache_lookup(const char *mall_id, const char *user_id,
									 HASHACTION action, bool *found);
extern void dc_cache_set_state(CachedEntity *e, const DcEntityState *state);
extern void dc_cache_added(CachedEntity *e, TimestampTz now);
extern void dc_cache_touch(CachedEntity *e, TimestampTz now);
extern void dc_cache_remove(CachedEntity *e);
extern void dc_cache_evict(const bool *shards);
extern int	dc_cache_passivate(TimestampTz now);
extern long dc_cache_count(void);

#endif							/* DC_ENTITY_CACHE_H */
