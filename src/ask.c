/*-------------------------------------------------------------------------
 *
 * ask.c
 *	  The caller's side of commands: route each to the owner of its shard,
 *	  queue it there (shared_memory.c) or hand it to the owner's server (forward.c),
 *	  and wait for the reply.
 *
 * This runs in the caller's backend, for dc_send_command and dc_tell (one
 * command), dc_send_commands (many), the transfers of saga.c and the
 * commands sent at commit (at_commit.c).  The command runs in the node's
 * transaction, not the caller's.
 *
 * Each command goes through the phases of DcAsk:
 *
 *	 WAITING -> ROUTING -> QUEUED -> DONE
 *	               ^         |
 *	               +---------+  the shard moved: route again
 *
 * WAITING: an earlier command of the same entity in the call is not
 * answered yet; commands to one entity are sent one at a time, so that
 * they apply in the order given whatever moves meanwhile.
 * ROUTING: the shard-map says who owns the shard.  A node of this server:
 * take a request slot and queue it.  Another server: forward it there and
 * wait (the call sends its other commands on meanwhile only after that).
 * Nobody: try again shortly.
 * QUEUED: the owner has it in its inbox, works on it, or has answered.  If
 * the shard moves while it still waits in the inbox (its node may be
 * paused or gone), it is taken back and routed again.
 *
 * A call returns its replies once the WAL they depend on is durable
 * (durable.c): a node writing in process commits without the flush, which
 * its callers wait for, one wait per call.
 *
 * Every command has ask_timeout from when it was first routed.  Not
 * applied, or not known to be, by then, it gets an error saying which.
 * Whatever ends the call (an error, a cancel, the backend exiting), every
 * slot it holds is given up as shared_memory.c describes: a queued command never
 * runs after its caller stopped waiting for it.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "ask.h"
#include "durable.h"
#include "entity.h"
#include "forward.h"
#include "settings.h"
#include "shard_hash.h"
#include "shared_memory.h"
#include "user_command.h"

/* how long to wait before routing again when no owner is known */
#define ROUTE_RETRY_MS	10

/* how often a waiting caller checks whether its shards moved */
#define REROUTE_CHECK_MS	50

static const char failover_hint[] =
"A failover takes up to durable_cluster.failure_timeout plus one heartbeat_interval; an ask_timeout longer than that rides through it.";

/* The outcome of a call's commands, and how far it got. */
typedef struct AskCall
{
	DcAsk	   *asks;
	int			n;
	const DcAskOptions *options;
	bool		catch_forward_errors;	/* a bulk call: one forward's error is its own */
	int			held;			/* request slots held */
	int			ndone;
	int		   *ready;			/* commands free to start, in order */
	int			ready_head;
	int			ready_tail;
	int		   *active;			/* commands started, not yet answered */
	int			nactive;
	XLogRecPtr	durable_lsn;	/* replies are shown once the WAL is durable
								 * up to here (durable.c) */
} AskCall;

/*
 * Owner of a shard per the shared-memory map (shared_memory.h): a node slot of
 * this server, DC_OWNER_NONE, or a remote server, whose address is then
 * copied to address.  *nshards is 0 while no map is loaded.
 */
static int
route(const char *mall_id, const char *user_id, int *shard, int *nshards, char *address)
{
	int			owner;

	*nshards = dc_map_number_of_shards();
	if (*nshards == 0)
		return DC_OWNER_NONE;
	*shard = dc_entity_shard(mall_id, user_id, *nshards);
	owner = dc_map_owner(*shard, *nshards, address);

	/* a node that is not running cannot take the command now */
	if (owner >= 0 && !dc_node_running(owner))
		owner = DC_OWNER_NONE;
	return owner;
}

/* The command is answered: its entity's next command may start. */
static void
finish(AskCall *call, DcAsk *a)
{
	a->phase = DC_ASK_DONE;
	call->ndone++;
	if (a->next_same >= 0)
		call->ready[call->ready_tail++] = a->next_same;
}

static void
fail(AskCall *call, DcAsk *a, int sqlstate, char *message, char *detail, const char *hint)
{
	a->reply = NULL;
	a->sqlstate = sqlstate;
	a->message = message;
	a->detail = detail;
	a->hint = hint ? pstrdup(hint) : NULL;
	finish(call, a);
}

static void
release_slot(AskCall *call, DcAsk *a)
{
	dc_slot_release(a->slot);
	a->slot = -1;
	call->held--;
}

/*
 * Forward a command to the server whose node owns its shard.  In a bulk
 * call an error there is that command's outcome, caught in a
 * subtransaction (what forward.c did on the connection is undone with
 * it); a cancel still ends the call.
 */
static Jsonb *
forward_one(AskCall *call, DcAsk *a, const char *address, bool *moved)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Jsonb	   *volatile reply = NULL;

	if (!call->catch_forward_errors)
		return dc_forward(address, a->roles, a->mall_id, a->user_id, a->cmd,
						  call->options->tell, a->deadline, moved);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		reply = dc_forward(address, a->roles, a->mall_id, a->user_id, a->cmd,
						   call->options->tell, a->deadline, moved);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		*moved = false;
		fail(call, a, edata->sqlerrcode, edata->message, edata->detail, edata->hint);
	}
	PG_END_TRY();
	return reply;
}

/*
 * ROUTING: queue the command to its owner, forward it, or wait a little.
 * Returns when to look at it again (0: at once).
 */
static TimestampTz
route_one(AskCall *call, DcAsk *a, TimestampTz now)
{
	const DcAskOptions *opt = call->options;
	char		address[DC_ADDRESS_BYTES];
	int			nshards;
	int			owner;
	DcRequestSlot *s;

	if (now < a->not_before)
		return a->not_before;
	owner = route(a->mall_id, a->user_id, &a->shard, &nshards, address);

	if (owner < DC_OWNER_NONE)
	{
		bool		moved;
		Jsonb	   *reply;

		/* a node of another server owns it: that server queues it */
		if (a->slot >= 0)
			release_slot(call, a);
		if (!opt->may_forward)
		{
			/* forwarded here: never further */
			a->reply = dc_moved_reply();
			finish(call, a);
			return 0;
		}
		reply = forward_one(call, a, address, &moved);
		if (a->phase == DC_ASK_DONE)
			return 0;
		if (!moved)
		{
			a->reply = reply;
			finish(call, a);
			return 0;
		}
		if (GetCurrentTimestamp() >= a->deadline)
		{
			fail(call, a, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 psprintf("no node of another server took the command within ask_timeout (%d ms); it was not applied",
						  opt->timeout_ms),
				 psprintf("Shard %d was last owned by a node of %s, which could not be reached or no longer owned it.",
						  a->shard, address),
				 failover_hint);
			return 0;
		}
		a->not_before = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ROUTE_RETRY_MS);
		return a->not_before;
	}

	if (owner < 0)
	{
		char		refused[NAMEDATALEN];

		/* this server's nodes will not serve before someone acts: say so now */
		if (nshards == 0 && dc_map_refused(refused))
		{
			fail(call, a, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				 psprintf("durable_cluster does not serve on this server: the extension in the store is version %s, but this server loaded the library of version %s; the command was not applied",
						  refused, DC_VERSION),
				 NULL, DC_VERSION_HINT);
			return 0;
		}
		if (now >= a->deadline)
		{
			if (nshards == 0)
				fail(call, a, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					 pstrdup("no durable_cluster node is serving: the shard map is not loaded"),
					 NULL,
					 "Check that durable_cluster.nodes > 0 and that the nodes run (SELECT * FROM dc.members).");
			else
				fail(call, a, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					 psprintf("no live durable_cluster node owns shard %d", a->shard),
					 psprintf("Waited durable_cluster.ask_timeout (%d ms).", opt->timeout_ms),
					 "Check the nodes with SELECT * FROM dc.members.");
			return 0;
		}
		a->not_before = TimestampTzPlusMilliseconds(now, ROUTE_RETRY_MS);
		return a->not_before;
	}

	if (a->slot < 0)
	{
		/* the call's first slot is a caller's own; more come from the spare ones */
		a->slot = dc_slot_acquire(call->held > 0);
		if (a->slot < 0)
		{
			if (now >= a->deadline)
			{
				fail(call, a, ERRCODE_INSUFFICIENT_RESOURCES,
					 pstrdup("no free durable_cluster request slot within ask_timeout; the command was not applied"),
					 NULL, NULL);
				return 0;
			}
			a->not_before = TimestampTzPlusMilliseconds(now, ROUTE_RETRY_MS);
			return a->not_before;
		}
		call->held++;
	}

	s = &dc_shared->slots[a->slot];
	s->shard = a->shard;
	s->number_of_shards = nshards;
	strlcpy(s->mall_id, a->mall_id, sizeof(s->mall_id));
	strlcpy(s->user_id, a->user_id, sizeof(s->user_id));
	s->command = *a->cmd;
	s->tell = opt->tell;
	a->owner = owner;
	a->phase = DC_ASK_QUEUED;
	dc_slot_enqueue(a->slot, owner);
	return a->deadline;
}

/* QUEUED, and ask_timeout has passed: give it up and say how far it got. */
static void
expire(AskCall *call, DcAsk *a)
{
	char		name[NAMEDATALEN];
	DcSlotState was = dc_slot_abandon(a->slot);

	a->slot = -1;
	call->held--;
	dc_node_slot_name(a->owner, name);
	if (was == DC_SLOT_QUEUED)
		fail(call, a, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
			 psprintf("no node took the command within ask_timeout (%d ms); it was not applied",
					  call->options->timeout_ms),
			 psprintf("It was waiting in the inbox of %s, owner of shard %d.", name, a->shard),
			 failover_hint);
	else
		fail(call, a, ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN,
			 psprintf("no reply from %s within ask_timeout (%d ms); the command may or may not have been applied",
					  name, call->options->timeout_ms),
			 NULL, DC_RETRY_HINT);
}

/*
 * QUEUED: take the reply if there is one.  check_route: also take the
 * command back if its shard has moved while it waits in an inbox.
 * Returns when to look at it again (0: at once).
 */
static TimestampTz
poll_one(AskCall *call, DcAsk *a, TimestampTz now, bool check_route)
{
	DcRequestSlot *s = &dc_shared->slots[a->slot];
	char		address[DC_ADDRESS_BYTES];
	int			nshards;

	if (dc_slot_state(a->slot) == DC_SLOT_DONE)
	{
		switch (s->reply_kind)
		{
			case DC_REPLY_OK:
				a->reply = palloc(s->reply_len);
				memcpy(a->reply, s->reply, s->reply_len);
				if (s->durable_lsn > call->durable_lsn)
					call->durable_lsn = s->durable_lsn;
				release_slot(call, a);
				finish(call, a);
				break;
			case DC_REPLY_ERROR:
				{
					int			sqlstate = s->reply_sqlstate;
					char	   *msg = pnstrdup(s->reply, s->reply_len);

					release_slot(call, a);
					fail(call, a, sqlstate, msg, NULL, NULL);
				}
				break;
			case DC_REPLY_MOVED:
				/* the shard changed hands: route again with the new map */
				release_slot(call, a);
				a->phase = DC_ASK_ROUTING;
				a->not_before = TimestampTzPlusMilliseconds(now, 1);
				return a->not_before;
		}
		return 0;
	}
	if (call->options->tell && dc_slot_accepted(a->slot) && dc_slot_detach(a->slot))
	{
		/* the owner has it, and frees the slot when it is done */
		a->slot = -1;
		call->held--;
		finish(call, a);
		return 0;
	}
	if (now >= a->deadline)
	{
		expire(call, a);
		return 0;
	}
	if (check_route &&
		route(a->mall_id, a->user_id, &a->shard, &nshards, address) != a->owner &&
		dc_slot_reclaim(a->slot))
	{
		a->phase = DC_ASK_ROUTING;
		a->not_before = 0;
		return 0;
	}
	return a->deadline;
}

/*
 * The call ends with an error: give up every slot it holds.  A cancel
 * (statement_timeout, a client's cancel request, pg_cancel_backend) after
 * a node took a command or answered one: some may well be applied and
 * committed, so plain 57014 would tell the caller "not done" wrongly.
 * Before that, everything left the inboxes unapplied, and 57014 is the
 * truth.
 */
static void
abandon_call(AskCall *call, MemoryContext cxt)
{
	bool		taken = false;

	for (int i = 0; i < call->n; i++)
	{
		DcAsk	   *a = &call->asks[i];

		if (a->phase == DC_ASK_DONE && a->sqlstate == 0)
			taken = true;
		if (a->slot >= 0)
		{
			DcSlotState was = dc_slot_abandon(a->slot);

			a->slot = -1;
			if (was == DC_SLOT_TAKEN || was == DC_SLOT_DONE)
				taken = true;
		}
	}
	if (taken)
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			FlushErrorState();
			ereport(ERROR,
					errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
					call->n == 1
					? errmsg("%s after a node had taken the command; it may or may not have been applied",
							 edata->message)
					: errmsg("%s after nodes had taken commands of the call; some may have been applied",
							 edata->message),
					errhint(DC_RETRY_HINT));
		}
		FreeErrorData(edata);
	}
}

/* Link each command to the next one of its entity; the first ones are ready. */
static void
order_by_entity(AskCall *call)
{
	HASHCTL		ctl;
	HTAB	   *last;

	for (int i = 0; i < call->n; i++)
	{
		call->asks[i].phase = DC_ASK_WAITING;
		call->asks[i].next_same = -1;
		call->asks[i].slot = -1;
		call->asks[i].sqlstate = 0;
		call->asks[i].reply = NULL;
	}
	if (call->n == 1)
	{
		call->ready[call->ready_tail++] = 0;
		return;
	}

	/* ids hold no control characters (dc_check_text), so \x01 separates them */
	ctl.keysize = 2 * DC_MAX_ID_BYTES + 2;
	ctl.entrysize = ctl.keysize + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	last = hash_create("durable_cluster call entities", call->n, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < call->n; i++)
	{
		char		key[2 * DC_MAX_ID_BYTES + 2];
		bool		found;
		char	   *entry;

		snprintf(key, sizeof(key), "%s\x01%s", call->asks[i].mall_id, call->asks[i].user_id);
		entry = hash_search(last, key, HASH_ENTER, &found);
		if (found)
			call->asks[*(int *) (entry + ctl.keysize)].next_same = i;
		else
			call->ready[call->ready_tail++] = i;
		*(int *) (entry + ctl.keysize) = i;
	}
	hash_destroy(last);
}

void
dc_ask_many(DcAsk *asks, int n, const DcAskOptions *options)
{
	AskCall		call = {0};
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz next_route_check = 0;

	/* the handler runs for a node, which would wait for itself */
	if (dc_in_command_handler)
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("a command handler cannot send commands"),
				errhint("A handler only returns its entity's new state."));

	call.asks = asks;
	call.n = n;
	call.options = options;
	call.catch_forward_errors = (n > 1);
	call.ready = palloc(sizeof(int) * n);
	call.active = palloc(sizeof(int) * Min(n, DC_ASK_WINDOW));
	order_by_entity(&call);

	PG_TRY();
	{
		while (call.ndone < n)
		{
			TimestampTz now = GetCurrentTimestamp();
			TimestampTz wake = TimestampTzPlusMilliseconds(now, REROUTE_CHECK_MS);
			bool		check_routes = (now >= next_route_check);
			int			done_before = call.ndone;

			CHECK_FOR_INTERRUPTS();
			if (check_routes)
				next_route_check = TimestampTzPlusMilliseconds(now, REROUTE_CHECK_MS);

			/* start what is free to start while the window has room */
			while (call.nactive < DC_ASK_WINDOW && call.ready_head < call.ready_tail)
			{
				DcAsk	   *a = &asks[call.ready[call.ready_head++]];

				a->phase = DC_ASK_ROUTING;
				a->deadline = TimestampTzPlusMilliseconds(now, options->timeout_ms);
				a->not_before = 0;
				call.active[call.nactive++] = a - asks;
			}

			for (int k = 0; k < call.nactive; k++)
			{
				DcAsk	   *a = &asks[call.active[k]];
				TimestampTz again;

				if (a->phase == DC_ASK_ROUTING)
					again = route_one(&call, a, now);
				else
					again = poll_one(&call, a, now, check_routes);
				if (a->phase == DC_ASK_DONE)
					call.active[k--] = call.active[--call.nactive];
				else if (again != 0 && again < wake)
					wake = again;
				else if (again == 0)
					wake = now;
			}

			if (call.ndone == n || call.ndone > done_before ||
				(call.nactive < DC_ASK_WINDOW && call.ready_head < call.ready_tail))
				continue;
			if (wake > now)
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 Max(TimestampDifferenceMilliseconds(now, wake), 1),
								 PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
			}
		}
	}
	PG_CATCH();
	{
		abandon_call(&call, cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pfree(call.ready);
	pfree(call.active);

	/* one wait for the flush of all the replies, as a commit's */
	dc_wait_durable(call.durable_lsn);
}

Jsonb *
dc_ask(const char *mall_id, const char *user_id, const DcCommand *cmd,
	   const DcAskOptions *options)
{
	DcAskOptions defaults = {dc_ask_timeout_ms, false, true, NULL};
	DcAsk		a;

	a.mall_id = mall_id;
	a.user_id = user_id;
	a.cmd = cmd;
	a.roles = options ? options->roles : NULL;
	dc_ask_many(&a, 1, options ? options : &defaults);
	if (a.sqlstate != 0)
		ereport(ERROR,
				errcode(a.sqlstate),
				errmsg_internal("%s", a.message),
				a.detail ? errdetail_internal("%s", a.detail) : 0,
				a.hint ? errhint("%s", a.hint) : 0);
	return a.reply;
}
