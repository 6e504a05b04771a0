/*-------------------------------------------------------------------------
 *
 * entity_cache.c
 *	  A node's in-memory entities: the committed state of every entity it
 *	  served, by (mall_id, user_id), so that a command costs no read.
 *
 * Entries live in a hash table in the node's TopMemoryContext, and on a
 * list kept in order of use, least recently used first.  The keys that
 * registered commands added to a state are kept in a context of their own.  Passivation takes from
 * the head of that list: entities unused for passivate_idle_after, and the
 * least recently used beyond max_entities_per_node.  Their state is stored
 * already; the next command loads it again.  The node passivates only
 * between batches, never while a batch holds entries.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "entity_cache.h"
#include "settings.h"

static HTAB *entity_cache;
static dlist_head lru_list;		/* least recently used first */
static MemoryContext extras_context;	/* the entries' DcEntityState.extra */

static uint32
entity_key_hash(const void *key, Size keysize)
{
	const EntityKey *k = key;

	return hash_bytes((const unsigned char *) k->ids, k->mall_len + k->user_len)
		^ k->mall_len;
}

static int
entity_key_match(const void *a, const void *b, Size keysize)
{
	const EntityKey *x = a;
	const EntityKey *y = b;

	if (x->mall_len != y->mall_len || x->user_len != y->user_len)
		return 1;
	return memcmp(x->ids, y->ids, x->mall_len + x->user_len);
}

/* Start empty: at the start, and whenever everything cached may be stale. */
void
dc_cache_reset(void)
{
	HASHCTL		ctl;

	if (entity_cache)
		hash_destroy(entity_cache);
	if (extras_context)
		MemoryContextReset(extras_context);
	else
		extras_context = AllocSetContextCreate(TopMemoryContext,
											   "durable_cluster entity extras",
											   ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(EntityKey);
	ctl.entrysize = sizeof(CachedEntity);
	ctl.hash = entity_key_hash;
	ctl.match = entity_key_match;
	ctl.hcxt = TopMemoryContext;
	entity_cache = hash_create("durable_cluster entities", 1024, &ctl,
							   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	dlist_init(&lru_list);
}

/*
 * hash_search on the entity's key.  An entry HASH_ENTER created must be
 * filled in (dc_cache_set_state) and then passed to dc_cache_added.
 */
CachedEntity *
dc_cache_lookup(const char *mall_id, const char *user_id, HASHACTION action, bool *found)
{
	EntityKey	key;
	CachedEntity *e;

	key.mall_len = strlen(mall_id);
	key.user_len = strlen(user_id);
	memcpy(key.ids, mall_id, key.mall_len);
	memcpy(key.ids + key.mall_len, user_id, key.user_len);
	e = hash_search(entity_cache, &key, action, found);
	if (action == HASH_ENTER && !*found)
		e->state.extra = NULL;
	return e;
}

/*
 * Make state the entry's committed state.  Its extra keys, unless they are
 * the entry's already, are copied out of the batch's memory.
 */
void
dc_cache_set_state(CachedEntity *e, const DcEntityState *state)
{
	Jsonb	   *old = e->state.extra;

	e->state = *state;
	if (state->extra == old)
		return;
	if (old)
		pfree(old);
	if (state->extra)
	{
		e->state.extra = MemoryContextAlloc(extras_context, VARSIZE(state->extra));
		memcpy(e->state.extra, state->extra, VARSIZE(state->extra));
	}
}

/* A new entry, filled in: it is the most recently used. */
void
dc_cache_added(CachedEntity *e, TimestampTz now)
{
	dlist_push_tail(&lru_list, &e->lru);
	e->last_used = now;
}

/* A batch uses the entity: it becomes the most recently used. */
void
dc_cache_touch(CachedEntity *e, TimestampTz now)
{
	dlist_move_tail(&lru_list, &e->lru);
	e->last_used = now;
}

void
dc_cache_remove(CachedEntity *e)
{
	if (e->state.extra)
		pfree(e->state.extra);
	dlist_delete(&e->lru);
	hash_search(entity_cache, &e->key, HASH_REMOVE, NULL);
}

/* Forget cached entities of the given shards (all shards if NULL). */
void
dc_cache_evict(const bool *shards)
{
	HASH_SEQ_STATUS seq;
	CachedEntity *e;

	hash_seq_init(&seq, entity_cache);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (shards == NULL || shards[e->shard])
			dc_cache_remove(e);
	}
}

/* Passivate what is due; returns how many entities left memory. */
int
dc_cache_passivate(TimestampTz now)
{
	TimestampTz idle_before = dc_passivate_idle_after_ms > 0
		? TimestampTzPlusMilliseconds(now, -dc_passivate_idle_after_ms)
		: DT_NOBEGIN;
	int			passivated = 0;

	while (!dlist_is_empty(&lru_list))
	{
		CachedEntity *e = dlist_head_element(CachedEntity, lru, &lru_list);

		if (hash_get_num_entries(entity_cache) <= dc_max_entities_per_node &&
			e->last_used > idle_before)
			break;
		dc_cache_remove(e);
		passivated++;
	}
	return passivated;
}

long
dc_cache_count(void)
{
	return hash_get_num_entries(entity_cache);
}
