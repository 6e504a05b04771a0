/*-------------------------------------------------------------------------
 *
 * node.c
 *	  The node: a background worker that owns shards, keeps the entities of
 *	  those shards in memory and applies their commands.
 *
 * Node life cycle (mirrored in the README):
 *
 *	 waiting --CREATE EXTENSION--> up --dc_remove_node, SIGTERM, shutdown-->
 *	   ^                           |  \          leaving --> left --> exit
 *	   +------DROP EXTENSION-------+   +--heartbeat finds us down--> up again
 *	                                        (new incarnation, cache dropped)
 *
 * The main loop alternates two kinds of work, both reaching the store only
 * through store.c (libpq, one statement per call):
 *
 * - a tick every heartbeat_interval, or at once when a change was announced
 *	 or a batch found a shard fenced: join or heartbeat, then reconcile
 *	 membership and shard map (any node may; an advisory lock lets one run
 *	 at a time) and copy the map into shared memory when it changed;
 * - batches: everything waiting in the inbox is taken at once, the entities
 *	 missing from the cache are loaded in one statement, the commands are
 *	 applied in arrival order, in memory, one entity at a time, and the
 *	 batch is stored by one statement, a transaction of its own that checks
 *	 the fence and writes each changed entity once (group commit).  Replies
 *	 go out after it committed.  A batch that only reads is answered from
 *	 the cache (see apply_and_store).
 *
 * While a batch commits, new commands queue up in the inbox and form the
 * next batch, so the number of commits per second stays bounded by the
 * disk while throughput grows with the number of callers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/pidfile.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "durable_cluster.h"
#include "entity.h"
#include "inbox.h"
#include "entity_cache.h"
#include "forward.h"
#include "saga.h"
#include "store.h"

/* An entity's working copy while a batch is applied. */
typedef struct BatchEntity
{
	CachedEntity *entry;
	const char *mall_id;
	const char *user_id;
	DcEntityState pending;
	int64		base_revision;	/* committed revision the batch started from */
	Jsonb	   *doc;			/* document of the pending state, once built */
} BatchEntity;

/* What a batch decided for one request. */
typedef struct BatchRequest
{
	int			slot;
	DcReplyKind kind;
	Jsonb	   *reply;
	Jsonb	   *logged;			/* reply from the command log: not applied again */
	Jsonb	   *request;		/* with a command_id: what it asks (see command_log) */
	int			same_as;		/* earlier request of the batch it repeats, or -1 */
	int			error_sqlstate; /* a registered command's handler failed: */
	char	   *error_message;	/* its error, for the caller */
} BatchRequest;

static int	node_index;
static char node_name[NAMEDATALEN];
static char node_roles[DC_ROLES_BYTES];
static int64 incarnation;		/* 0 = not a member */
static Oid	extension_oid = InvalidOid;

/* shards this node owns: epoch, 0 = not ours; valid for map_seen only */
static int64 owned_epoch[DC_MAX_SHARDS];
static int	owned_nshards;
static int64 map_seen = -1;
static Oid	map_seen_extension = InvalidOid;

/*
 * A node runs for months, so nothing it does may allocate in a context
 * that lives as long: a batch works in batch_context, reset after it and
 * after each store call of a tick; everything else an iteration of the
 * main loop allocates (ticks, stats, deferred tells, libpq values) goes to
 * loop_context, reset at the start of the next iteration.  What must last
 * (the entity cache, the store connection, the forwarding connections) is
 * put in TopMemoryContext or a context of its own on purpose.
 */
static MemoryContext batch_context;
static MemoryContext loop_context;
static bool tick_now;

/* the current batch attempt sent its write (or COMMIT) to the store */
static bool batch_write_sent;

/*
 * node-N, or node-N@advertise_address in a cluster of several servers, so
 * that names are unique across the cluster.
 */
void
dc_node_name(int index, char *buf, size_t len)
{
	if (dc_advertise_address && dc_advertise_address[0] != '\0')
		snprintf(buf, len, "node-%d@%s", index + 1, dc_advertise_address);
	else
		snprintf(buf, len, "node-%d", index + 1);
}

/* Passivate what is due and publish the node's statistics. */
static void
report_stats(int commands, TimestampTz now)
{
	int			passivated = dc_cache_passivate(now);

	dc_node_report(node_index, dc_cache_count(),
				   (int64) MemoryContextMemAllocated(TopMemoryContext, true),
				   commands, passivated, now);
}

/* ---- shard ownership ---- */

/*
 * Take our shards from the shared-memory map.  A shard we lost, or got back
 * under a new epoch, may have been written by another node meanwhile: its
 * cached entities are dropped and will be reloaded from the store.
 */
static void
adopt_shard_map(void)
{
	bool	   *changed;
	bool		any = false;
	bool		resized;
	int			nshards;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->map_version == map_seen &&
		dc_shared->map_extension == map_seen_extension)
	{
		LWLockRelease(dc_shared->map_lock);
		return;
	}
	changed = palloc0(sizeof(bool) * DC_MAX_SHARDS);
	nshards = dc_shared->number_of_shards;
	resized = (nshards != owned_nshards);
	for (int i = 0; i < DC_MAX_SHARDS; i++)
	{
		int64		epoch = 0;

		if (i < nshards && dc_shared->owner[i] == node_index)
			epoch = dc_shared->epoch[i];
		if (epoch != owned_epoch[i])
		{
			changed[i] = any = true;
			owned_epoch[i] = epoch;
		}
	}
	owned_nshards = nshards;
	map_seen = dc_shared->map_version;
	map_seen_extension = dc_shared->map_extension;
	LWLockRelease(dc_shared->map_lock);

	if (resized)
		dc_cache_evict(NULL);
	else if (any)
		dc_cache_evict(changed);
	pfree(changed);
}

/* This node's incarnation as a member (0: none); its statements carry its heartbeat. */
static void
set_incarnation(int64 value)
{
	incarnation = value;
	dc_store_set_member(node_name, value);
}

/* Forget membership, ownership and cache: the extension went away or came back. */
static void
forget_everything(void)
{
	set_incarnation(0);
	dc_cache_reset();
	memset(owned_epoch, 0, sizeof(owned_epoch));
	owned_nshards = 0;
	map_seen = -1;
	map_seen_extension = InvalidOid;

	LWLockAcquire(dc_shared->map_lock, LW_EXCLUSIVE);
	if (dc_shared->map_extension != extension_oid)
	{
		dc_shared->map_extension = InvalidOid;
		dc_shared->map_version = -1;
		dc_shared->number_of_shards = 0;
	}
	LWLockRelease(dc_shared->map_lock);
}

/* ---- store calls ---- */

/*
 * Log a failed store call and forget the error; returns a copy of it.  The
 * same failure again and again (say, the database does not exist yet) is
 * logged once, not every heartbeat.
 */
static ErrorData *
store_failure(const char *what)
{
	static char last[256];
	ErrorData  *edata;

	MemoryContextSwitchTo(batch_context);
	edata = CopyErrorData();
	FlushErrorState();
	if (strncmp(last, edata->message, sizeof(last) - 1) != 0)
		ereport(LOG,
				errmsg("%s: %s failed: %s", node_name, what, edata->message));
	strlcpy(last, edata->message, sizeof(last));
	return edata;
}

/* Run work(); on error, log it and return false. */
static bool
run_store_work(void (*work) (void), const char *what)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		ok = true;

	pgstat_report_activity(STATE_RUNNING, what);
	PG_TRY();
	{
		work();
	}
	PG_CATCH();
	{
		store_failure(what);
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(cxt);
	MemoryContextReset(batch_context);
	return ok;
}

/* Notice CREATE/DROP EXTENSION; join, or prove we are alive. */
static void
heartbeat_work(void)
{
	Oid			ext;

	dc_store_note_cluster_role();
	ext = dc_store_extension_oid();
	if (ext != extension_oid)
	{
		extension_oid = ext;
		forget_everything();
	}
	if (!OidIsValid(ext))
		return;

	if (incarnation > 0 && !dc_store_heartbeat(node_name, incarnation))
	{
		ereport(LOG,
				errmsg("durable_cluster %s: incarnation %lld is no longer an up member; rejoining",
					   node_name, (long long) incarnation));
		dc_cache_reset();
		set_incarnation(0);
	}
	if (incarnation == 0)
	{
		set_incarnation(dc_store_join(node_name, node_index, dc_self_address(), node_roles));
		ereport(LOG,
				errmsg("durable_cluster %s joined as incarnation %lld",
					   node_name, (long long) incarnation));
	}
}

/*
 * Mark silent members down, rebalance, refresh the shared-memory map.  A
 * change is announced, which wakes the other nodes when it commits.
 */
static void
reconcile_work(void)
{
	dc_store_reconcile();
	dc_store_refresh_map(extension_oid);
}

/*
 * The periodic tick.  The heartbeat is a statement of its own, so that
 * waiting behind another node's reconcile can never delay it.
 */
static void
node_tick(void)
{
	if (run_store_work(heartbeat_work, "durable_cluster heartbeat") && incarnation > 0)
	{
		run_store_work(reconcile_work, "durable_cluster reconcile");
		adopt_shard_map();
	}
}

/*
 * True when this server is in a smart shutdown and no client session but
 * the nodes' own is left.  A smart shutdown waits for every client session
 * to end, the nodes' store sessions included, before it signals background
 * workers; so the nodes must notice it themselves, from the status line the
 * postmaster keeps in postmaster.pid, and leave.
 */
static bool
smart_shutdown_idle(void)
{
	char		path[MAXPGPATH];
	char		line[MAXPGPATH + 64];	/* a line may hold the data directory */
	FILE	   *f;
	bool		stopping = false;

	if (!dc_store_is_here())
		return false;
	snprintf(path, sizeof(path), "%s/postmaster.pid", DataDir);
	if ((f = AllocateFile(path, "r")) == NULL)
		return false;
	for (int n = 1; fgets(line, sizeof(line), f) != NULL; n++)
		if (n == LOCK_FILE_LINE_PM_STATUS)
			stopping = (strncmp(line, PM_STATUS_STOPPING, strlen(PM_STATUS_STOPPING)) == 0);
	FreeFile(f);
	return stopping && dc_store_other_sessions() == 0;
}

/* ---- batches ---- */

static CachedEntity *
cache_lookup(DcRequestSlot *req, HASHACTION action, bool *found)
{
	return dc_cache_lookup(req->mall_id, req->user_id, action, found);
}

/* Same entity and same command_id. */
static bool
same_command(const DcRequestSlot *a, const DcRequestSlot *b)
{
	return strcmp(a->command.command_id, b->command.command_id) == 0 &&
		strcmp(a->mall_id, b->mall_id) == 0 &&
		strcmp(a->user_id, b->user_id) == 0;
}

/* Same command_id as an earlier command of the entity, but not the same command. */
static void
command_id_reused(BatchRequest *r, const DcRequestSlot *req)
{
	r->kind = DC_REPLY_ERROR;
	r->error_sqlstate = ERRCODE_UNIQUE_VIOLATION;
	r->error_message = psprintf("command_id \"%s\" was already used for another command of this entity; this \"%s\" was not applied",
								req->command.command_id, req->command.name);
}

static bool
jsonb_equal(Jsonb *a, Jsonb *b)
{
	return DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(a), JsonbPGetDatum(b)));
}

/*
 * Get what the OK requests need from the store, in one call:
 *
 * - every entity they name into the cache, loading the missing ones;
 *   entries are added only once the load succeeded;
 * - for commands sent with a command_id, the reply in the command log: one
 *   found there is answered with it and not applied again; one that
 *   repeats an earlier request of this batch gets that request's reply.
 *   Either only if it asks for the same (name and arguments) as the
 *   command that used the id first; otherwise it is an error, and nothing
 *   is applied: an id cannot be taken ahead of its command.
 */
static void
load_batch(BatchRequest *reqs, int n, TimestampTz now)
{
	DcEntityLoad *loads = palloc(sizeof(DcEntityLoad) * n);
	int		   *load_req = palloc(sizeof(int) * n);
	int			nloads = 0;
	DcCommandLog *lookups = palloc(sizeof(DcCommandLog) * n);
	int		   *lookup_req = palloc(sizeof(int) * n);
	int			nlookups = 0;

	for (int i = 0; i < n; i++)
	{
		DcRequestSlot *req = &dc_shared->slots[reqs[i].slot];
		bool		found;

		if (reqs[i].kind != DC_REPLY_OK)
			continue;

		(void) cache_lookup(req, HASH_FIND, &found);
		for (int j = 0; j < nloads && !found; j++)
			found = (strcmp(loads[j].mall_id, req->mall_id) == 0 &&
					 strcmp(loads[j].user_id, req->user_id) == 0);
		if (!found)
		{
			loads[nloads].mall_id = req->mall_id;
			loads[nloads].user_id = req->user_id;
			load_req[nloads++] = i;
		}

		if (req->command.command_id[0] == '\0')
			continue;
		reqs[i].request = dc_command_request(&req->command);
		for (int j = 0; j < i && reqs[i].same_as < 0; j++)
			if (reqs[j].kind == DC_REPLY_OK && reqs[j].same_as < 0 &&
				same_command(req, &dc_shared->slots[reqs[j].slot]))
				reqs[i].same_as = j;
		if (reqs[i].same_as >= 0)
		{
			if (!jsonb_equal(reqs[i].request, reqs[reqs[i].same_as].request))
			{
				reqs[i].same_as = -1;
				command_id_reused(&reqs[i], req);
			}
			continue;
		}
		lookups[nlookups].mall_id = req->mall_id;
		lookups[nlookups].user_id = req->user_id;
		lookups[nlookups].command_id = req->command.command_id;
		lookup_req[nlookups++] = i;
	}
	if (nloads == 0 && nlookups == 0)
		return;

	dc_store_load_batch(loads, nloads, lookups, nlookups);
	for (int j = 0; j < nloads; j++)
	{
		DcRequestSlot *req = &dc_shared->slots[reqs[load_req[j]].slot];
		bool		found;
		CachedEntity *entry = cache_lookup(req, HASH_ENTER, &found);

		entry->shard = req->shard;
		entry->batch_index = -1;
		dc_cache_set_state(entry, &loads[j].state);
		dc_cache_added(entry, now);
	}
	for (int j = 0; j < nlookups; j++)
	{
		BatchRequest *r = &reqs[lookup_req[j]];

		if (lookups[j].reply == NULL)
			continue;
		if (jsonb_equal(lookups[j].request, r->request))
			r->logged = lookups[j].reply;
		else
			command_id_reused(r, &dc_shared->slots[r->slot]);
	}
}

/*
 * Entities of the current batch attempt.  File-level rather than local so
 * that the error path sees every entry registered before the error.
 */
static int	batch_count;

/* The working copy of a request's entity in this batch attempt. */
static BatchEntity *
batch_entity(BatchEntity *entities, DcRequestSlot *req, TimestampTz now)
{
	bool		found;
	CachedEntity *entry = cache_lookup(req, HASH_FIND, &found);
	BatchEntity *be;

	Assert(found);
	if (entry->batch_index >= 0)
		return &entities[entry->batch_index];

	dc_cache_touch(entry, now);
	be = &entities[batch_count];
	entry->batch_index = batch_count++;
	be->entry = entry;
	be->mall_id = req->mall_id;
	be->user_id = req->user_id;
	be->doc = NULL;
	be->pending = entry->state;
	be->base_revision = entry->state.revision;
	return be;
}

/*
 * Apply a registered command: its handler runs in the store, in the
 * batch's transaction, on the entity's pending state.  If it failed, the
 * request gets its error and the state stays as it was.
 */
static DcOutcome
apply_registered(DcRequestSlot *req, BatchRequest *r, BatchEntity *be, TimestampTz now)
{
	Jsonb	   *after;
	DcEntityState state;

	if (be->doc == NULL)
		be->doc = dc_entity_to_jsonb(be->mall_id, be->user_id, &be->pending);
	after = dc_store_run_command(&req->command, be->doc,
								 &r->error_sqlstate, &r->error_message);
	if (after == NULL)
		return DC_OUTCOME_REJECTED;
	/*
	 * Compared in our own form: a handler that gives the balance back as a
	 * number ("balance": 5.5 for "5.50") has not changed it.
	 */
	dc_entity_from_jsonb(after, be->pending.revision + 1, &state);
	if (DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(be->doc),
										 JsonbPGetDatum(dc_entity_to_jsonb(be->mall_id, be->user_id,
																		   &state)))))
		return DC_OUTCOME_UNCHANGED;
	state.has_event_time = true;
	state.last_event_time = now;
	be->pending = state;
	return DC_OUTCOME_CHANGED;
}

/*
 * Apply the OK requests in arrival order to working copies of their
 * entities and store the result with one store call.  Returns how
 * many shards the store found fenced, listed in fenced[]; if any, nothing
 * was written.
 *
 * A batch with registered commands runs in one store transaction: their
 * handlers, then the write, which fences every shard it touches with a
 * lock, so that what the handlers did commits only with the batch.
 */
static int
apply_and_store(BatchRequest *reqs, int n, BatchEntity *entities, TimestampTz now,
				int *fenced)
{
	int		   *shards = palloc(sizeof(int) * n);
	int64	   *epochs = palloc(sizeof(int64) * n);
	DcEntityWrite *writes = palloc(sizeof(DcEntityWrite) * n);
	DcCommandLog *logs = palloc(sizeof(DcCommandLog) * n);
	DcSagaStep *sagas = palloc(sizeof(DcSagaStep) * n);
	int			nsagas = 0;
	int			nshards = 0;
	int			nwrites = 0;
	int			nlogs = 0;
	bool		in_transaction = false;
	int			nfenced;

	batch_count = 0;

	for (int i = 0; i < n; i++)
	{
		DcRequestSlot *req = &dc_shared->slots[reqs[i].slot];
		BatchEntity *be;
		DcOutcome	outcome;
		const char *label;
		bool		seen = false;

		if (reqs[i].kind != DC_REPLY_OK || reqs[i].same_as >= 0)
			continue;
		if (reqs[i].logged)
		{
			reqs[i].reply = reqs[i].logged;
			continue;
		}

		/* every shard the batch touches is fenced, read ones included */
		for (int j = 0; j < nshards && !seen; j++)
			seen = (shards[j] == req->shard);
		if (!seen)
		{
			shards[nshards] = req->shard;
			epochs[nshards++] = owned_epoch[req->shard];
		}

		be = batch_entity(entities, req, now);
		if (req->command.kind == DC_CMD_USER)
		{
			if (!in_transaction)
				dc_store_begin_batch();
			in_transaction = true;
			reqs[i].error_message = NULL;
			label = req->command.name;
			outcome = apply_registered(req, &reqs[i], be, now);
			if (reqs[i].error_message)
				continue;
		}
		else
			outcome = dc_command_apply(&req->command, &be->pending, now, &label);
		if (outcome == DC_OUTCOME_CHANGED || be->doc == NULL)
			be->doc = dc_entity_to_jsonb(be->mall_id, be->user_id, &be->pending);
		reqs[i].reply = dc_build_reply(outcome != DC_OUTCOME_REJECTED, label, be->doc,
									   be->pending.revision, req->shard, node_name);
		if (req->command.command_id[0] != '\0')
		{
			logs[nlogs].mall_id = req->mall_id;
			logs[nlogs].user_id = req->user_id;
			logs[nlogs].command_id = req->command.command_id;
			logs[nlogs].request = reqs[i].request;
			logs[nlogs++].reply = reqs[i].reply;
		}
		if (req->command.saga_step &&
			(sagas[nsagas].step = dc_saga_step(req->command.kind,
											   outcome == DC_OUTCOME_CHANGED)) != NULL)
			sagas[nsagas++].record = (Jsonb *) req->command.payload;
	}
	for (int i = 0; i < n; i++)
		if (reqs[i].same_as >= 0)
		{
			BatchRequest *first = &reqs[reqs[i].same_as];

			reqs[i].reply = first->reply;
			reqs[i].error_sqlstate = first->error_sqlstate;
			reqs[i].error_message = first->error_message;
		}

	for (int e = 0; e < batch_count; e++)
	{
		BatchEntity *be = &entities[e];

		be->entry->batch_index = -1;
		if (be->pending.revision == be->base_revision)
			continue;
		writes[nwrites].mall_id = be->mall_id;
		writes[nwrites].user_id = be->user_id;
		writes[nwrites].shard = be->entry->shard;
		writes[nwrites].state_doc = be->doc;
		writes[nwrites].revision = be->pending.revision;
		writes[nwrites].old_revision = be->base_revision;
		nwrites++;
	}

	if (nshards == 0)
		return 0;

	/*
	 * A batch that only reads needs no round trip when the store is this
	 * server: then every node takes its shards from this server's
	 * shared-memory map, as this one did at the start of the batch
	 * (adopt_shard_map), and a node that takes a shard over writes to it
	 * only after that map says so.  So the cached states read here were
	 * current when the batch started, after its requests arrived.
	 */
	if (nwrites == 0 && nlogs == 0 && !in_transaction && dc_single_server() &&
		dc_shared->nremote == 0)
		return 0;
	batch_write_sent = true;
	nfenced = dc_store_write_batch(node_name, shards, epochs, nshards, writes, nwrites,
								   logs, nlogs, sagas, nsagas, fenced);
	if (in_transaction)
		dc_store_end_batch(nfenced == 0);
	return nfenced;
}

/*
 * Detached tells that another server would not take yet: routed again
 * after each tick (which refreshes the map), not in a busy loop.
 */
static int *deferred_tells;
static int	ndeferred;

/*
 * The same for a new owner on another server: hand the tell to that server
 * as a caller would (forward.c).  If that server does not own the shard
 * (any more) or cannot be reached, the tell is deferred, to be routed anew
 * after the next tick, as a caller would route it again, for ask_timeout
 * from the first attempt; after that it is lost, as a tell whose batch
 * fails is.
 */
static bool
forward_tell_elsewhere(int slot, const char *address)
{
	DcRequestSlot *req = &dc_shared->slots[slot];
	volatile bool moved = true;
	TimestampTz now = GetCurrentTimestamp();

	if (!dc_slot_detached(slot))
		return false;
	if (req->forward_until == 0)
		req->forward_until = TimestampTzPlusMilliseconds(now, dc_ask_timeout_ms);
	PG_TRY();
	{
		bool		not_taken;

		(void) dc_forward(address, DC_CLUSTER_ROLE, req->mall_id, req->user_id, &req->command, true,
						  req->forward_until, &not_taken);
		moved = not_taken;
	}
	PG_CATCH();
	{
		(void) store_failure("forwarding a tell to another server");
	}
	PG_END_TRY();
	if (moved)
	{
		if (GetCurrentTimestamp() >= req->forward_until)
			return false;
		deferred_tells[ndeferred++] = slot;
		return true;
	}
	/* the other server has it: free the slot, whose caller is gone */
	dc_slot_reply(slot, DC_REPLY_OK, 0, NULL, 0);
	return true;
}

/*
 * A dc_tell whose caller returned, and whose shard turned out to have moved:
 * queue it to the shard's owner per the shared-memory map, there being no
 * caller to route it again.  That may be this node, if it has not caught
 * up with the map yet: its next batch comes after the tick that refreshes
 * it.  False if the request is not such a tell, or there is no owner to
 * take it (or, when leaving, only this node).
 */
static bool
forward_tell(int slot, bool leaving)
{
	DcRequestSlot *req = &dc_shared->slots[slot];
	int			owner = DC_OWNER_NONE;
	char		address[DC_ADDRESS_BYTES];

	if (!req->tell)
		return false;
	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->number_of_shards == req->number_of_shards)
		owner = dc_shared->owner[req->shard];
	if (owner < DC_OWNER_NONE)
		strlcpy(address, dc_shared->remote[DC_REMOTE_INDEX(owner)], sizeof(address));
	LWLockRelease(dc_shared->map_lock);
	if (owner < DC_OWNER_NONE)
		return forward_tell_elsewhere(slot, address);
	if (owner < 0 || dc_shared->nodes[owner].pid == 0 || (leaving && owner == node_index))
		return false;
	return dc_slot_forward(slot, owner);
}

/*
 * After a failed batch: was the extension dropped (or dropped and created
 * again) meanwhile?  Then whatever the store said (a function or table
 * missing, a plan gone stale) is that, and the callers hear it so.
 */
static bool
extension_gone(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool gone = false;

	PG_TRY();
	{
		gone = dc_store_extension_oid() != extension_oid;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	return gone;
}

/*
 * Apply and store one batch of requests.  Everything is decided before the
 * commit; replies are released only after it.  If the store finds some of
 * the batch's shards fenced, nothing was written: their requests go back to
 * be routed again and the rest is applied anew.
 */
static void
process_batch(const int *slots, int n)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(batch_context);
	BatchRequest *reqs = palloc(sizeof(BatchRequest) * n);
	BatchEntity *entities = palloc(sizeof(BatchEntity) * n);
	int		   *fenced = palloc(sizeof(int) * n);
	TimestampTz now = GetCurrentTimestamp();
	ErrorData  *volatile failure = NULL;
	int			applied = 0;

	adopt_shard_map();

	/* requests for shards we do not believe we own go back to be routed again */
	for (int i = 0; i < n; i++)
	{
		DcRequestSlot *req = &dc_shared->slots[slots[i]];

		reqs[i].slot = slots[i];
		reqs[i].reply = NULL;
		reqs[i].logged = NULL;
		reqs[i].request = NULL;
		reqs[i].same_as = -1;
		reqs[i].error_message = NULL;
		reqs[i].kind = (req->number_of_shards == owned_nshards && owned_epoch[req->shard] > 0)
			? DC_REPLY_OK : DC_REPLY_MOVED;
		if (reqs[i].kind == DC_REPLY_OK && req->tell)
			dc_slot_accept(slots[i]);
	}

	pgstat_report_activity(STATE_RUNNING, "durable_cluster batch");
	PG_TRY();
	{
		int			nfenced;

		batch_count = 0;
		batch_write_sent = false;
		load_batch(reqs, n, now);
		while ((nfenced = apply_and_store(reqs, n, entities, now, fenced)) > 0)
		{
			/* the map moved on without us noticing yet */
			tick_now = true;
			for (int i = 0; i < n; i++)
				for (int j = 0; j < nfenced; j++)
					if (reqs[i].kind == DC_REPLY_OK &&
						dc_shared->slots[reqs[i].slot].shard == fenced[j])
						reqs[i].kind = DC_REPLY_MOVED;
		}
	}
	PG_CATCH();
	{
		dc_store_abandon_batch();
		failure = store_failure("durable_cluster batch");
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (failure && ERRCODE_TO_CATEGORY(failure->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION &&
		extension_gone())
	{
		failure->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		failure->message = "durable_cluster was dropped while the command waited; it was not applied";
		tick_now = true;
	}

	/* publish committed states; after a failure, reload from the store instead */
	for (int e = 0; e < batch_count; e++)
	{
		CachedEntity *entry = entities[e].entry;

		entry->batch_index = -1;
		if (failure)
			dc_cache_remove(entry);
		else
			dc_cache_set_state(entry, &entities[e].pending);
	}

	for (int i = 0; i < n; i++)
	{
		if (reqs[i].kind == DC_REPLY_OK && !failure)
			applied++;
		if (reqs[i].kind == DC_REPLY_MOVED)
		{
			if (!forward_tell(reqs[i].slot, false))
				dc_slot_reply(reqs[i].slot, DC_REPLY_MOVED, 0, NULL, 0);
		}
		else if (failure && batch_write_sent &&
				 ERRCODE_TO_CATEGORY(failure->sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION)
		{
			/* the batch may have committed before the connection went */
			char	   *msg = psprintf("lost the connection to the store while storing the command; it may or may not have been applied: %s",
									   failure->message);

			dc_slot_reply(reqs[i].slot, DC_REPLY_ERROR, ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
						  msg, strlen(msg) + 1);
		}
		else if (failure)
		{
			char	   *msg = psprintf("could not apply the command: %s", failure->message);

			dc_slot_reply(reqs[i].slot, DC_REPLY_ERROR, failure->sqlerrcode,
						  msg, strlen(msg) + 1);
		}
		else if (reqs[i].error_message)
			dc_slot_reply(reqs[i].slot, DC_REPLY_ERROR, reqs[i].error_sqlstate,
						  reqs[i].error_message, strlen(reqs[i].error_message) + 1);
		else if (VARSIZE(reqs[i].reply) > DC_REPLY_BYTES)
		{
			static const char msg[] = "the reply is larger than a request slot can hold";

			dc_slot_reply(reqs[i].slot, DC_REPLY_ERROR, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
						  msg, sizeof(msg));
		}
		else
			dc_slot_reply(reqs[i].slot, DC_REPLY_OK, 0,
						  reqs[i].reply, VARSIZE(reqs[i].reply));
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(batch_context);
	report_stats(applied, now);
}

/*
 * Route the deferred tells again, now that the map was refreshed.  When
 * leaving, this is their last chance: those deferred once more are lost.
 */
static void
retry_deferred_tells(bool leaving)
{
	int			n = ndeferred;
	int		   *slots = palloc(sizeof(int) * Max(n, 1));

	memcpy(slots, deferred_tells, sizeof(int) * n);
	ndeferred = 0;
	for (int i = 0; i < n; i++)
		if (!forward_tell(slots[i], leaving))
			dc_slot_reply(slots[i], DC_REPLY_MOVED, 0, NULL, 0);
	if (leaving)
	{
		for (int i = 0; i < ndeferred; i++)
			dc_slot_reply(deferred_tells[i], DC_REPLY_MOVED, 0, NULL, 0);
		ndeferred = 0;
	}
	pfree(slots);
}

static void
leaving_work(void)
{
	dc_store_leaving(node_name, incarnation);
}

static void
leave_work(void)
{
	dc_store_leave(node_name, incarnation);
	dc_store_refresh_map(extension_oid);
}

/*
 * Leave the cluster (SIGTERM or dc_remove_node).  Nothing is half done:
 * batches are applied whole between iterations of the main loop.  First
 * the member turns "leaving"; then it turns "left", which hands its shards
 * to the other up nodes; then everything still queued here goes back to be
 * routed to them.
 */
static void
node_leave(void)
{
	int		   *slots = palloc(sizeof(int) * dc_shared->nslots);
	int			n;

	if (incarnation > 0 && OidIsValid(extension_oid) &&
		run_store_work(leaving_work, "durable_cluster leaving") &&
		run_store_work(leave_work, "durable_cluster leave"))
		ereport(LOG, errmsg("durable_cluster %s left the cluster", node_name));

	dc_node_detach(node_index);
	retry_deferred_tells(true);
	while ((n = dc_inbox_take(node_index, slots, dc_shared->nslots)) > 0)
		for (int i = 0; i < n; i++)
			if (!forward_tell(slots[i], true))
				dc_slot_reply(slots[i], DC_REPLY_MOVED, 0, NULL, 0);
}

void
dc_node_main(Datum main_arg)
{
	int		   *slots;
	TimestampTz next_tick = 0;
	bool		removed = false;

	node_index = DatumGetInt32(main_arg);
	SpinLockAcquire(&dc_shared->mutex);
	strlcpy(node_name, dc_shared->nodes[node_index].name, sizeof(node_name));
	strlcpy(node_roles, dc_shared->nodes[node_index].roles, sizeof(node_roles));
	SpinLockRelease(&dc_shared->mutex);

	/* SIGTERM asks for a graceful leave, not an immediate exit */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/*
	 * The node reaches its database only through the store connection, as
	 * dc_cluster; its own connection is to the shared catalogs only, and
	 * runs no query.
	 */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname(node_name);
	dc_store_init(node_name);

	batch_context = AllocSetContextCreate(TopMemoryContext, "durable_cluster batch",
										  ALLOCSET_DEFAULT_SIZES);
	loop_context = AllocSetContextCreate(TopMemoryContext, "durable_cluster node loop",
										 ALLOCSET_DEFAULT_SIZES);
	dc_cache_reset();
	slots = MemoryContextAlloc(TopMemoryContext, sizeof(int) * dc_shared->nslots);
	deferred_tells = MemoryContextAlloc(TopMemoryContext, sizeof(int) * dc_shared->nslots);
	dc_node_attach(node_index);

	for (;;)
	{
		int			n = 0;
		TimestampTz now;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (dc_node_leave_requested(node_index))
		{
			removed = true;
			break;
		}
		if (dc_node_take_tick_request(node_index))
			tick_now = true;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		if (tick_now || now >= next_tick)
		{
			tick_now = false;
			node_tick();
			retry_deferred_tells(false);
			report_stats(0, now);
			next_tick = TimestampTzPlusMilliseconds(now, dc_heartbeat_interval_ms);
			if (smart_shutdown_idle())
			{
				removed = true;		/* exit code 0: nothing to restart */
				break;
			}
		}

		if (incarnation > 0)
		{
			n = dc_inbox_take(node_index, slots, dc_shared->nslots);
			if (n > 0)
				process_batch(slots, n);
		}
		/* announced to a remote store's listener, read while idle or with a result */
		if (dc_store_announced())
			tick_now = true;
		if (n == 0 && !tick_now)
		{
			long		wait_ms;

			now = GetCurrentTimestamp();
			wait_ms = Max(TimestampDifferenceMilliseconds(now, next_tick), 1);
			dc_store_wait_idle(wait_ms);
		}
	}

	node_leave();

	/*
	 * Removed by dc_remove_node: free the slot and exit with code 0, which the
	 * postmaster never restarts.  Otherwise code 1: restarted after
	 * bgw_restart_time unless the server is stopping.
	 */
	if (removed)
	{
		dc_node_slot_release(node_index);
		proc_exit(0);
	}
	proc_exit(1);
}
