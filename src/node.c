/*-------------------------------------------------------------------------
 *
 * node.c
 *	  The node: a background worker that owns shards, keeps the entities of
 *	  those shards in memory and applies their commands.
 *
 * Its life cycle (waiting, up, leaving, left; down and up again as a new
 * incarnation) is drawn in docs/design.md, "Node life cycle".
 *
 * The main loop alternates two kinds of work, both reaching the store only
 * through store.c:
 *
 * - a tick every heartbeat_interval, or at once when a change was announced
 *	 or a batch found a shard fenced: join or heartbeat, then reconcile
 *	 membership and shard map (any node may; durable_cluster.lock_map lets
 *	 one run at a time) and copy the map into shared memory when it changed;
 * - batches: everything waiting in the inbox is taken at once, the entities
 *	 missing from the cache are loaded, the commands are applied in arrival
 *	 order, in memory, one entity at a time, and the batch is stored in one
 *	 transaction that checks the fence and writes each changed entity once
 *	 (group commit).  Replies go out after it committed.  A batch that only
 *	 reads is answered from the cache (see apply_and_store).
 *
 * The tick's statements go over the node's libpq session to the store.  A
 * batch goes the way store_transport.h describes: when the store is this
 * server, in the node's own process and transaction (load and write in
 * one), otherwise over that session.
 *
 * While a batch commits, new commands queue up in the inbox and form the
 * next batch, so the number of commits per second stays bounded by the
 * disk while throughput grows with the number of callers.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pidfile.h"
#include "utils/timestamp.h"

#include "entity.h"
#include "entity_cache.h"
#include "forward.h"
#include "jsonb_build.h"
#include "node.h"
#include "saga.h"
#include "settings.h"
#include "shared_memory.h"
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

/*
 * What the node holds, by how long it lasts.
 *
 * A node runs for months, so nothing it does may allocate in a context
 * that lives as long: a batch works in batch_context, reset after it and
 * after each store call of a tick; everything else an iteration of the
 * main loop allocates (ticks, stats, deferred tells, libpq values) goes to
 * loop_context, reset at the start of the next iteration.  What must last
 * (the entity cache, the store connection, the forwarding connections) is
 * put in TopMemoryContext or a context of its own on purpose.
 */
typedef struct NodeState
{
	/* the process: from its start to its exit */
	int			index;			/* its node slot */
	char		name[NAMEDATALEN];
	char		roles[DC_ROLES_BYTES];
	MemoryContext batch_context;
	MemoryContext loop_context;
	bool		tick_now;		/* run the tick before the next batch */
	int		   *deferred_tells; /* tells another server would not take yet: */
	int			ndeferred;		/* routed again after each tick */
	char		refused_version[NAMEDATALEN];	/* the store's extension version
												 * it does not serve, "" = none */

	/* the incarnation: from joining the cluster to leaving it or being declared down */
	int64		incarnation;	/* 0 = not a member */
	Oid			extension_oid;	/* the extension served, InvalidOid = none */
	int64		owned_epoch[DC_MAX_SHARDS]; /* epoch of each shard owned, 0 = not ours */
	int			owned_nshards;	/* valid for the map map_seen only */
	DcMapSeen	map_seen;		/* the map they were taken from */

	/* how it reaches the store */
	bool		in_process;		/* connected to the store's database: batches in process */
	bool		restart_in_process; /* started before dc_cluster could log in here:
									 * restarts once it can, to work in process */

	/* the batch attempt */
	int			batch_count;	/* its entities, seen by the error path too */
	bool		batch_write_sent;	/* its write (or COMMIT) went to the store */
	XLogRecPtr	batch_durable_lsn;	/* its replies are shown once the WAL is
									 * durable up to here (durable.c) */
	int			batch_callers;	/* OK replies it gave callers who wait for them */
	XLogRecPtr	earlier_durable_lsn;	/* batch_durable_lsn of the batch before
										 * it, if callers wait for that one's
										 * flush; InvalidXLogRecPtr otherwise */
} NodeState;

static NodeState node = {
	.extension_oid = InvalidOid,
	.map_seen = {.version = -1,.extension = InvalidOid},
};

void
dc_node_worker(BackgroundWorker *worker, int index)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* restarted one second after an exit with code 1, never after code 0 */
	worker->bgw_restart_time = 1;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "durable_cluster");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "dc_node_main");
	/* one type for all, which pg_stat_activity.backend_type shows; a name each */
	snprintf(worker->bgw_name, BGW_MAXLEN, "durable_cluster node %d", index + 1);
	snprintf(worker->bgw_type, BGW_MAXLEN, "durable_cluster node");
	worker->bgw_main_arg = Int32GetDatum(index);
}

/*
 * Passivate what is due and publish the node's statistics: after a batch
 * (commands > 0), or at a tick, which also measures its memory.  Walking
 * every memory context (the caches of a node connected to its database
 * have many) cost a batch of one command several percent of its time.
 */
static void
report_stats(int commands, TimestampTz now)
{
	int			passivated = dc_cache_passivate(now);

	dc_node_report(node.index, dc_cache_count(),
				   commands > 0 ? -1 : (int64) MemoryContextMemAllocated(TopMemoryContext, true),
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
	int64		epoch[DC_MAX_SHARDS];
	bool	   *changed;
	bool		any = false;
	bool		resized;
	int			nshards;

	if (!dc_map_owned(node.index, &node.map_seen, &nshards, epoch))
		return;
	changed = palloc0(sizeof(bool) * DC_MAX_SHARDS);
	resized = (nshards != node.owned_nshards);
	for (int i = 0; i < DC_MAX_SHARDS; i++)
	{
		if (epoch[i] != node.owned_epoch[i])
		{
			changed[i] = any = true;
			node.owned_epoch[i] = epoch[i];
		}
	}
	node.owned_nshards = nshards;

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
	node.incarnation = value;
	dc_store_set_member(node.name, value);
}

/* Forget membership, ownership and cache: the extension went away or came back. */
static void
forget_everything(void)
{
	set_incarnation(0);
	dc_cache_reset();
	memset(node.owned_epoch, 0, sizeof(node.owned_epoch));
	node.owned_nshards = 0;
	node.map_seen.version = -1;
	node.map_seen.extension = InvalidOid;
	dc_map_forget(node.extension_oid);
}

/* ---- store calls ---- */

/*
 * After a failed store call: was the extension dropped (or dropped and
 * created again) meanwhile?
 */
static bool
extension_gone(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool gone = false;

	PG_TRY();
	{
		char	   *version;

		gone = dc_store_extension(&version) != node.extension_oid;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
	}
	PG_END_TRY();
	return gone;
}

/* The error being handled, copied into the batch's context, and forgotten. */
static ErrorData *
caught_error(void)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(node.batch_context);
	edata = CopyErrorData();
	FlushErrorState();
	return edata;
}

/*
 * Log a failed store call's error (edata, from caught_error), return it.  The
 * same failure again and again (say, the database does not exist yet) is
 * logged once, not every heartbeat.  A call that failed because the
 * extension was dropped (or dropped and created again) meanwhile -- a
 * function or table missing, a plan gone stale -- is what DROP EXTENSION
 * does to a node in mid-call: not worth a log line.  The failure says so
 * to the callers, and the next tick, right away, notices the change.
 */
static ErrorData *
failure_of(ErrorData *edata, const char *what)
{
	static char last[256];

	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION &&
		extension_gone())
	{
		edata->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		edata->message = "durable_cluster was dropped while the command waited; it was not applied";
		node.tick_now = true;
		return edata;
	}
	if (strncmp(last, edata->message, sizeof(last) - 1) != 0)
		ereport(LOG,
				errmsg("%s: %s failed: %s", node.name, what, edata->message),
				edata->context ? errcontext_msg("%s", edata->context) : 0);
	strlcpy(last, edata->message, sizeof(last));
	return edata;
}

/* Both: for a store call outside a batch's transaction. */
static ErrorData *
store_failure(const char *what)
{
	return failure_of(caught_error(), what);
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
	MemoryContextReset(node.batch_context);
	return ok;
}

static void
leaving_work(void)
{
	dc_store_leaving(node.name, node.incarnation);
}

static void
leave_work(void)
{
	dc_store_leave(node.name, node.incarnation);
	dc_store_refresh_map(node.extension_oid);
}

/* Leave the cluster, handing this node's shards to the other up nodes. */
static void
leave_cluster(void)
{
	if (node.incarnation > 0 && OidIsValid(node.extension_oid) &&
		run_store_work(leaving_work, "durable_cluster leaving") &&
		run_store_work(leave_work, "durable_cluster leave"))
		ereport(LOG, errmsg("durable_cluster %s left the cluster", node.name));
}

/*
 * Serve only an extension of this library's version: a store whose tables
 * and functions are of another version may not be what this library's
 * statements expect.  A node that finds them disagreeing says so once,
 * leaves the cluster (its shards go to nodes that agree, on other servers
 * during a rolling upgrade), unloads this server's shard map so that callers
 * here are told at once, and looks again every tick: ALTER EXTENSION ...
 * UPDATE, or a restart with the matching library, brings it back.
 */
static bool
serves_version(const char *version)
{
	if (strcmp(version, DC_VERSION) == 0)
	{
		if (node.refused_version[0] != '\0')
		{
			ereport(LOG,
					errmsg("durable_cluster %s serves again: the extension in the store is version %s, as the library",
						   node.name, version));
			node.refused_version[0] = '\0';
			dc_map_refuse(NULL);
		}
		return true;
	}
	if (strcmp(node.refused_version, version) == 0)
		return false;			/* left already, and said so */
	ereport(WARNING,
			errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			errmsg("durable_cluster %s does not serve: the extension in the store is version %s, but this server loaded the library of version %s",
				   node.name, version, DC_VERSION),
			errhint(DC_VERSION_HINT));
	strlcpy(node.refused_version, version, sizeof(node.refused_version));
	leave_cluster();
	forget_everything();
	dc_map_refuse(version);
	return false;
}

/*
 * Two batches in flight at most.  A node writing in process commits without
 * the WAL flush, which its callers do (durable.c), and takes its next batch
 * at once: the callers of one batch wait for the flush while the next one
 * is applied.  Before it takes a third, it waits a moment for the first to
 * be flushed, as a synchronous commit would have, so that the commands
 * arriving meanwhile make one batch, not many small ones, each with its
 * transaction and commit record (at 16 clients and more, CPU per command
 * rose by a third without this wait, docs/benchmarks.md).  Only where
 * callers wait for that flush, which they do: not for a batch of tells;
 * and at most durable_cluster.batch_flush_wait.
 */
static void
await_earlier_batch(void)
{
	XLogRecPtr	lsn = node.earlier_durable_lsn;
	TimestampTz until;

	if (XLogRecPtrIsInvalid(lsn) || dc_batch_flush_wait_ms == 0 || GetFlushRecPtr(NULL) >= lsn)
		return;
	until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), dc_batch_flush_wait_ms);
	do
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	} while (GetFlushRecPtr(NULL) < lsn && GetCurrentTimestamp() < until &&
			 !ShutdownRequestPending);
}

/* Notice CREATE/DROP EXTENSION; join, or prove we are alive. */
static void
heartbeat_work(void)
{
	Oid			ext;
	char	   *version;

	dc_store_note_cluster_role();
	if (node.restart_in_process && node.incarnation == 0 && dc_shared->cluster_role_ready)
	{
		ereport(LOG,
				errmsg("durable_cluster %s restarts to write the store in its own process, now that \"%s\" can log in to \"%s\"",
					   node.name, DC_CLUSTER_ROLE, dc_database));
		proc_exit(1);
	}
	ext = dc_store_extension(&version);
	if (ext != node.extension_oid)
	{
		/* another extension, or none: what was refused was the old one's */
		node.extension_oid = ext;
		node.refused_version[0] = '\0';
		dc_map_refuse(NULL);
		forget_everything();
	}
	if (!OidIsValid(ext) || !serves_version(version))
		return;

	if (node.incarnation > 0 && !dc_store_heartbeat(node.name, node.incarnation))
	{
		ereport(LOG,
				errmsg("durable_cluster %s: incarnation %lld is no longer an up member; rejoining",
					   node.name, (long long) node.incarnation));
		dc_cache_reset();
		set_incarnation(0);
	}
	if (node.incarnation == 0)
	{
		set_incarnation(dc_store_join(node.name, node.index, dc_self_address(), node.roles));
		ereport(LOG,
				errmsg("durable_cluster %s joined as incarnation %lld, writing its batches %s",
					   node.name, (long long) node.incarnation,
					   node.in_process ? "in process" : "over libpq"));
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
	dc_store_refresh_map(node.extension_oid);
}

/*
 * The periodic tick.  The heartbeat is a statement of its own, so that
 * waiting behind another node's reconcile can never delay it.
 */
static void
node_tick(void)
{
	if (run_store_work(heartbeat_work, "durable_cluster heartbeat") && node.incarnation > 0)
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

/* The request fails with sqlstate and message: not applied, nor answered as another. */
static void
request_fails(BatchRequest *r, int sqlstate, char *message)
{
	r->kind = DC_REPLY_ERROR;
	r->same_as = -1;
	r->error_sqlstate = sqlstate;
	r->error_message = message;
}

/* Same command_id as an earlier command of the entity, but not the same command. */
static void
command_id_reused(BatchRequest *r, const DcRequestSlot *req)
{
	request_fails(r, ERRCODE_UNIQUE_VIOLATION,
				  psprintf("command_id \"%s\" was already used for another command of this entity; this \"%s\" was not applied",
						   req->command.command_id, req->command.name));
}


/*
 * A request whose entity another transaction holds open, a former owner's
 * paused in its batch most likely: it fails, not applied, and may be
 * retried; the entity leaves the cache, to be read again once that one
 * ended.
 */
static void
entity_held(BatchRequest *reqs, int n, const char *mall_id, const char *user_id)
{
	for (int i = 0; i < n; i++)
	{
		DcRequestSlot *req = &dc_shared->slots[reqs[i].slot];
		bool		found;
		CachedEntity *entry;

		if (reqs[i].kind != DC_REPLY_OK || strcmp(req->mall_id, mall_id) != 0 ||
			strcmp(req->user_id, user_id) != 0)
			continue;
		request_fails(&reqs[i], ERRCODE_LOCK_NOT_AVAILABLE,
					  psprintf("entity (%s, %s) is held by another transaction, most likely that of a former owner of its shard paused in its batch; the command was not applied and may be retried",
							   mall_id, user_id));
		entry = cache_lookup(req, HASH_FIND, &found);
		if (found)
			dc_cache_remove(entry);
	}
}

/*
 * A request whose command_id's logged reply another transaction holds
 * open: that transaction has this very command in it (a delivery the
 * caller gave up on, taken by a former owner paused in its batch), and
 * may still commit it, if it passed its fence before it stopped.  Its
 * outcome is not known until that transaction ends, so the request fails
 * as "may or may not have been applied", to be sent again with the same
 * command_id; the other requests of its entity are held (entity_held).
 */
static void
command_pending(BatchRequest *reqs, int n, BatchRequest *r)
{
	DcRequestSlot *req = &dc_shared->slots[r->slot];
	int			index = r - reqs;

	for (int i = 0; i < n; i++)
	{
		if ((i != index && reqs[i].same_as != index) || reqs[i].kind != DC_REPLY_OK)
			continue;
		request_fails(&reqs[i], ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
					  psprintf("command_id \"%s\" of entity (%s, %s) is in another transaction that has not ended, most likely that of a former owner of its shard paused in its batch; the command may or may not have been applied",
							   req->command.command_id, req->mall_id, req->user_id));
	}
	entity_held(reqs, n, req->mall_id, req->user_id);
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
 *
 * An entity or logged reply another transaction holds open (store_batch.c)
 * is not loaded: the requests of that entity fail (entity_held).
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
			if (!dc_jsonb_equal(reqs[i].request, reqs[reqs[i].same_as].request))
				command_id_reused(&reqs[i], req);
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
		CachedEntity *entry;

		if (loads[j].held)
		{
			entity_held(reqs, n, loads[j].mall_id, loads[j].user_id);
			continue;
		}
		entry = cache_lookup(req, HASH_ENTER, &found);

		entry->shard = req->shard;
		entry->batch_index = -1;
		dc_cache_set_state(entry, &loads[j].state);
		dc_cache_added(entry, now);
	}
	for (int j = 0; j < nlookups; j++)
	{
		BatchRequest *r = &reqs[lookup_req[j]];

		if (lookups[j].held)
			command_pending(reqs, n, r);
		if (lookups[j].reply == NULL || r->kind != DC_REPLY_OK)
			continue;
		if (dc_jsonb_equal(lookups[j].request, r->request))
			r->logged = lookups[j].reply;
		else
			command_id_reused(r, &dc_shared->slots[r->slot]);
	}
}

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
	be = &entities[node.batch_count];
	entry->batch_index = node.batch_count++;
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
	if (dc_jsonb_equal(be->doc, dc_entity_to_jsonb(be->mall_id, be->user_id, &state)))
		return DC_OUTCOME_UNCHANGED;
	state.has_event_time = true;
	state.last_event_time = now;
	be->pending = state;
	return DC_OUTCOME_CHANGED;
}

/*
 * Apply the OK requests in arrival order to working copies of their
 * entities: each gets its reply, and batch the shards it touched, its
 * command log entry and its transfer step.  Registered commands run their
 * handlers in the store, in a transaction begun for them
 * (*in_transaction).
 */
static void
apply_requests(BatchRequest *reqs, int n, BatchEntity *entities, TimestampTz now,
			   DcBatchWrite *batch, bool *in_transaction)
{
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
		for (int j = 0; j < batch->nshards && !seen; j++)
			seen = (batch->shards[j] == req->shard);
		if (!seen)
		{
			batch->shards[batch->nshards] = req->shard;
			batch->epochs[batch->nshards++] = node.owned_epoch[req->shard];
		}

		be = batch_entity(entities, req, now);
		if (req->command.kind == DC_CMD_USER)
		{
			if (!*in_transaction)
				dc_store_begin_batch();
			*in_transaction = true;
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
									   be->pending.revision, req->shard, node.name);
		if (req->command.command_id[0] != '\0')
		{
			DcCommandLog *log = &batch->logs[batch->nlogs++];

			log->mall_id = req->mall_id;
			log->user_id = req->user_id;
			log->command_id = req->command.command_id;
			log->request = reqs[i].request;
			log->reply = reqs[i].reply;
		}
		if (req->command.saga_step &&
			(batch->sagas[batch->nsagas].step =
			 dc_saga_step(req->command.kind, outcome == DC_OUTCOME_CHANGED)) != NULL)
			batch->sagas[batch->nsagas++].record = (Jsonb *) req->command.payload;
	}

	/* a repeat of an earlier request of the batch gets its reply */
	for (int i = 0; i < n; i++)
		if (reqs[i].same_as >= 0)
		{
			BatchRequest *first = &reqs[reqs[i].same_as];

			reqs[i].reply = first->reply;
			reqs[i].error_sqlstate = first->error_sqlstate;
			reqs[i].error_message = first->error_message;
		}
}

/* The entities the batch changed, each written once at its last revision. */
static void
collect_writes(BatchEntity *entities, DcBatchWrite *batch)
{
	for (int e = 0; e < node.batch_count; e++)
	{
		BatchEntity *be = &entities[e];
		DcEntityWrite *w;

		be->entry->batch_index = -1;
		if (be->pending.revision == be->base_revision)
			continue;
		w = &batch->writes[batch->nwrites++];
		w->mall_id = be->mall_id;
		w->user_id = be->user_id;
		w->shard = be->entry->shard;
		w->state_doc = be->doc;
		w->revision = be->pending.revision;
		w->old_revision = be->base_revision;
	}
}

/*
 * Apply the OK requests and store the result with one store call.
 * Returns true if the batch must be applied again without some of them:
 * those of shards the store found fenced (sent back to be routed again)
 * or of entities another transaction held (failed); nothing was written
 * then.
 *
 * A batch with registered commands runs in one store transaction: their
 * handlers, then the write, which fences every shard it touches with a
 * lock, so that what the handlers did commits only with the batch.
 */
static bool
apply_and_store(BatchRequest *reqs, int n, BatchEntity *entities, TimestampTz now)
{
	DcBatchWrite batch = {0};
	bool		in_transaction = false;
	int		   *fenced = palloc(sizeof(int) * n);
	int		   *held = palloc(sizeof(int) * n);
	int			nfenced;
	int			nheld;

	batch.shards = palloc(sizeof(int) * n);
	batch.epochs = palloc(sizeof(int64) * n);
	batch.writes = palloc(sizeof(DcEntityWrite) * n);
	batch.logs = palloc(sizeof(DcCommandLog) * n);
	batch.sagas = palloc(sizeof(DcSagaStep) * n);
	node.batch_count = 0;

	apply_requests(reqs, n, entities, now, &batch, &in_transaction);
	collect_writes(entities, &batch);
	if (batch.nshards == 0)
		return false;

	/*
	 * A batch that only reads needs no round trip when the store is this
	 * server: then every node takes its shards from this server's
	 * shared-memory map, as this one did at the start of the batch
	 * (adopt_shard_map), and a node that takes a shard over writes to it
	 * only after that map says so.  So the cached states read here were
	 * current when the batch started, after its requests arrived.
	 */
	if (batch.nwrites == 0 && batch.nlogs == 0 && !in_transaction && dc_single_server() &&
		dc_shared->nremote == 0)
		return false;
	node.batch_write_sent = true;
	nfenced = dc_store_write_batch(node.name, &batch, fenced, held, &nheld);
	if (in_transaction)
		dc_store_end_batch(nfenced == 0 && nheld == 0);

	if (nfenced > 0)
	{
		/* the map moved on without us noticing yet */
		node.tick_now = true;
		for (int i = 0; i < n; i++)
			for (int j = 0; j < nfenced; j++)
				if (reqs[i].kind == DC_REPLY_OK &&
					dc_shared->slots[reqs[i].slot].shard == fenced[j])
					reqs[i].kind = DC_REPLY_MOVED;
	}
	for (int j = 0; j < nheld; j++)
		entity_held(reqs, n, batch.writes[held[j]].mall_id, batch.writes[held[j]].user_id);
	return nfenced > 0 || nheld > 0;
}

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
		DcRoles		cluster;

		dc_one_role(DC_CLUSTER_ROLE, &cluster);
		(void) dc_forward(address, &cluster, req->mall_id, req->user_id, &req->command, true,
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
		node.deferred_tells[node.ndeferred++] = slot;
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
	int			owner;
	char		address[DC_ADDRESS_BYTES];

	if (!req->tell)
		return false;
	owner = dc_map_owner(req->shard, req->number_of_shards, address);
	if (owner < DC_OWNER_NONE)
		return forward_tell_elsewhere(slot, address);
	if (owner < 0 || !dc_node_running(owner) || (leaving && owner == node.index))
		return false;
	return dc_slot_forward(slot, owner);
}

/*
 * The requests taken from the inbox: those for shards this node does not
 * believe it owns go back to be routed again; a tell for one it owns is
 * accepted, and its caller may return.
 */
static void
take_requests(BatchRequest *reqs, const int *slots, int n)
{
	for (int i = 0; i < n; i++)
	{
		DcRequestSlot *req = &dc_shared->slots[slots[i]];

		reqs[i].slot = slots[i];
		reqs[i].reply = NULL;
		reqs[i].logged = NULL;
		reqs[i].request = NULL;
		reqs[i].same_as = -1;
		reqs[i].error_message = NULL;
		reqs[i].kind = (req->number_of_shards == node.owned_nshards && node.owned_epoch[req->shard] > 0)
			? DC_REPLY_OK : DC_REPLY_MOVED;
		if (reqs[i].kind == DC_REPLY_OK && req->tell)
			dc_slot_accept(slots[i]);
	}
}

/*
 * Load, apply and store the batch; again without the requests of shards
 * the store found fenced, which go back to be routed again.  Returns the
 * failure, if it failed (the store's error, or the extension dropped).
 */
static ErrorData *
run_batch(BatchRequest *reqs, int n, BatchEntity *entities, TimestampTz now)
{
	ErrorData  *volatile failure = NULL;

	pgstat_report_activity(STATE_RUNNING, "durable_cluster batch");
	PG_TRY();
	{
		node.batch_count = 0;
		node.batch_write_sent = false;
		load_batch(reqs, n, now);
		while (apply_and_store(reqs, n, entities, now))
			;
		/* a batch that wrote nothing may still hold what it read */
		dc_store_release_batch();
		node.earlier_durable_lsn =
			node.batch_callers > 0 ? node.batch_durable_lsn : InvalidXLogRecPtr;
		node.batch_callers = 0;
		node.batch_durable_lsn = dc_store_durable_lsn();
	}
	PG_CATCH();
	{
		/* the error first: rolling back the batch's transaction frees it */
		ErrorData  *edata = caught_error();

		dc_store_release_batch();
		failure = failure_of(edata, "durable_cluster batch");
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return failure;
}

/* The reply of one request of the batch, or the batch's failure, to its caller. */
static void
send_reply(BatchRequest *r, ErrorData *failure)
{
	if (r->kind == DC_REPLY_MOVED)
	{
		if (!forward_tell(r->slot, false))
			dc_slot_reply(r->slot, DC_REPLY_MOVED, 0, NULL, 0);
	}
	else if (failure && node.batch_write_sent &&
			 ERRCODE_TO_CATEGORY(failure->sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION)
	{
		/* the batch may have committed before the connection went */
		char	   *msg = psprintf("lost the connection to the store while storing the command; it may or may not have been applied: %s",
								   failure->message);

		dc_slot_reply(r->slot, DC_REPLY_ERROR, ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
					  msg, strlen(msg) + 1);
	}
	else if (failure)
	{
		char	   *msg = psprintf("could not apply the command: %s", failure->message);

		dc_slot_reply(r->slot, DC_REPLY_ERROR, failure->sqlerrcode, msg, strlen(msg) + 1);
	}
	else if (r->error_message)
		dc_slot_reply(r->slot, DC_REPLY_ERROR, r->error_sqlstate,
					  r->error_message, strlen(r->error_message) + 1);
	else if (VARSIZE(r->reply) > DC_REPLY_BYTES)
	{
		static const char msg[] = "the reply is larger than a request slot can hold";

		dc_slot_reply(r->slot, DC_REPLY_ERROR, ERRCODE_PROGRAM_LIMIT_EXCEEDED, msg, sizeof(msg));
	}
	else if (dc_slot_reply_durable(r->slot, r->reply, VARSIZE(r->reply), node.batch_durable_lsn))
		node.batch_callers++;
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
	MemoryContext oldcxt = MemoryContextSwitchTo(node.batch_context);
	BatchRequest *reqs = palloc(sizeof(BatchRequest) * n);
	BatchEntity *entities = palloc(sizeof(BatchEntity) * n);
	TimestampTz now = GetCurrentTimestamp();
	ErrorData  *failure;
	int			applied = 0;

	adopt_shard_map();
	take_requests(reqs, slots, n);
	failure = run_batch(reqs, n, entities, now);

	/* publish committed states; after a failure, reload from the store instead */
	for (int e = 0; e < node.batch_count; e++)
	{
		CachedEntity *entry = entities[e].entry;

		entry->batch_index = -1;
		if (failure)
			dc_cache_remove(entry);
		else
			dc_cache_set_state(entry, &entities[e].pending);
	}

	/*
	 * An entity still never stored (read, or refused, only) keeps no place
	 * in the cache: reads of ids nobody wrote would push out the entities
	 * of other tenants.  It is loaded again, as not stored, if asked for.
	 */
	for (int i = 0; i < n; i++)
	{
		bool		found;
		CachedEntity *entry;

		if (reqs[i].kind != DC_REPLY_OK)
			continue;
		entry = cache_lookup(&dc_shared->slots[reqs[i].slot], HASH_FIND, &found);
		if (found && entry->state.revision == 0)
			dc_cache_remove(entry);
	}

	for (int i = 0; i < n; i++)
	{
		if (reqs[i].kind == DC_REPLY_OK && !failure)
			applied++;
		send_reply(&reqs[i], failure);
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(node.batch_context);
	report_stats(applied, now);
}

/*
 * Route the deferred tells again, now that the map was refreshed.  When
 * leaving, this is their last chance: those deferred once more are lost.
 */
static void
retry_deferred_tells(bool leaving)
{
	int			n = node.ndeferred;
	int		   *slots = palloc(sizeof(int) * Max(n, 1));

	memcpy(slots, node.deferred_tells, sizeof(int) * n);
	node.ndeferred = 0;
	for (int i = 0; i < n; i++)
		if (!forward_tell(slots[i], leaving))
			dc_slot_reply(slots[i], DC_REPLY_MOVED, 0, NULL, 0);
	if (leaving)
	{
		for (int i = 0; i < node.ndeferred; i++)
			dc_slot_reply(node.deferred_tells[i], DC_REPLY_MOVED, 0, NULL, 0);
		node.ndeferred = 0;
	}
	pfree(slots);
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

	leave_cluster();
	dc_node_detach(node.index);
	retry_deferred_tells(true);
	while ((n = dc_inbox_take(node.index, slots, dc_shared->nslots)) > 0)
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

	node.index = DatumGetInt32(main_arg);
	dc_node_slot_identity(node.index, node.name, node.roles);

	/* SIGTERM asks for a graceful leave, not an immediate exit */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/*
	 * A node whose store is this server works in the store's database, as
	 * dc_cluster, with an empty search_path, and writes its batches itself.
	 * A worker connects once, and that role and database exist only once
	 * CREATE EXTENSION ran: until then (dc_shared->cluster_role_ready), or
	 * with the store on another server, the node's own connection is to
	 * the shared catalogs only and it reaches the store over libpq.  A
	 * node that started too early restarts as soon as it can log in, before
	 * it joins (heartbeat_work).
	 *
	 * Row locks are waited for at most a quarter of failure_timeout: the
	 * one a batch can meet is a paused former owner's, and the node's
	 * heartbeats wait while its batch does.
	 */
	if (dc_store_is_here() && dc_store_in_process && dc_shared->cluster_role_ready)
	{
		BackgroundWorkerInitializeConnection(dc_database, DC_CLUSTER_ROLE, 0);
		SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
		SetConfigOption("lock_timeout", psprintf("%d", Max(dc_failure_timeout_ms / 4, 1)),
						PGC_SUSET, PGC_S_OVERRIDE);
		node.in_process = true;
	}
	else
	{
		BackgroundWorkerInitializeConnection(NULL, NULL, 0);
		node.restart_in_process = dc_store_is_here() && dc_store_in_process;
	}
	pgstat_report_appname(node.name);
	dc_store_init(node.name, node.in_process);

	node.batch_context = AllocSetContextCreate(TopMemoryContext, "durable_cluster batch",
										  ALLOCSET_DEFAULT_SIZES);
	node.loop_context = AllocSetContextCreate(TopMemoryContext, "durable_cluster node loop",
										 ALLOCSET_DEFAULT_SIZES);
	dc_cache_reset();
	slots = MemoryContextAlloc(TopMemoryContext, sizeof(int) * dc_shared->nslots);
	node.deferred_tells = MemoryContextAlloc(TopMemoryContext, sizeof(int) * dc_shared->nslots);
	dc_node_attach(node.index);

	for (;;)
	{
		int			n = 0;
		TimestampTz now;

		MemoryContextSwitchTo(node.loop_context);
		MemoryContextReset(node.loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (dc_node_leave_requested(node.index))
		{
			removed = true;
			break;
		}
		if (dc_node_take_tick_request(node.index))
			node.tick_now = true;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		if (node.tick_now || now >= next_tick)
		{
			node.tick_now = false;
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

		if (node.incarnation > 0)
		{
			await_earlier_batch();
			n = dc_inbox_take(node.index, slots, dc_shared->nslots);
			if (n > 0)
				process_batch(slots, n);
		}
		/* announced to a remote store's listener, read while idle or with a result */
		if (dc_store_announced())
			node.tick_now = true;
		if (n == 0 && !node.tick_now)
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
		dc_node_slot_release(node.index);
		proc_exit(0);
	}
	proc_exit(1);
}
