/*-------------------------------------------------------------------------
 *
 * shared_memory.c
 *	  The shared memory of durable_cluster: the shard map, the node table,
 *	  and the request slots and node inboxes through which callers hand
 *	  commands to nodes.
 *
 * A caller takes a free slot, fills in the command, and appends the slot to
 * the owner node's inbox (a FIFO list threaded through the slots), then
 * sleeps on its own latch.  The node takes everything in its inbox at once,
 * works on the batch, and after COMMIT writes each reply into its slot and
 * sets the caller's latch.
 *
 * Slot life cycle (all transitions under DcShared->mutex):
 *
 *	 FREE -> FILLING (caller) -> QUEUED (caller) -> TAKEN (node) -> DONE (node)
 *	 DONE -> FREE (caller, after copying the reply)
 *
 * A caller that gives up (cancel, statement_timeout, ask_timeout) on a
 * QUEUED request takes it out of the inbox (the inbox is doubly linked, so
 * that is O(1)) and frees it: not delivered really means not applied, and
 * requests given up on never pile up in the inbox of a node that is slow
 * or paused.  One that gives up on a TAKEN request marks it abandoned: the
 * node frees it when it replies.  A caller whose request's shard moved
 * while it waited in an inbox takes it out the same way and routes it
 * again.  A backend that ends while it holds a slot (pg_terminate_backend,
 * a FATAL error, which leaves no PG_CATCH to run) gives its slots up the
 * same way, from a before_shmem_exit callback; and should a slot's caller be
 * gone without that (nothing known does that, short of a crash that resets
 * shared memory anyway), a caller that finds no free slot reclaims it.
 *
 * Locks.  Three guard all of it, each held only briefly, and never one
 * while taking another but node_lock then mutex (claiming a node slot):
 *
 *	 mutex (spinlock)	the request slots' states and links (free list,
 *						inboxes), the nodes' processes (latch; pid is
 *						written under it), tick requests and statistics,
 *						the saga worker's latch.  Held for a few
 *						instructions: no loop over slots or nodes, no
 *						string formatting, no allocation.  Request and
 *						reply bodies are copied outside it, while the slot
 *						is private to one side (FILLING for the caller,
 *						TAKEN for the node).
 *	 node_lock (LWLock)	who the nodes are: in_use, name, roles,
 *						leave_requested.  Scans of the node table and name
 *						formatting happen under it.
 *	 map_lock (LWLock)	the shard map (owners, epochs, remote servers).
 *						Taken in this file only: the node that reads
 *						the map from the store installs it with
 *						dc_map_install, nodes take their shards with
 *						dc_map_owned, callers route with dc_map_owner.
 *
 * Read without a lock: a node's pid (an atomic, so routing can tell
 * whether a node runs without taking a lock per command), and a slot's
 * caller_pid or state when looking for candidates, each checked again
 * under the mutex before anything is changed.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "shared_memory.h"

DcShared   *dc_shared = NULL;

static void inbox_unlink(int slot);
static DcSlotState give_up(int slot);
static void stats_zero(DcNodeStats *stats, TimestampTz now);
static void request_ticks(void);
static void map_unload(void);

static int
slot_count(void)
{
	/*
	 * Every backend may have an abandoned slot pending plus a live one; the
	 * bulk calls' extra slots come out of the same half (dc_slot_acquire).
	 */
	return 2 * MaxBackends + 16;
}

Size
dc_shmem_size(void)
{
	return add_size(offsetof(DcShared, slots),
					mul_size(slot_count(), sizeof(DcRequestSlot)));
}

void
dc_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	dc_shared = ShmemInitStruct("durable_cluster", dc_shmem_size(), &found);
	if (!found)
	{
		int			n = slot_count();

		SpinLockInit(&dc_shared->mutex);
		dc_shared->nslots = n;
		for (int i = 0; i < n; i++)
		{
			dc_shared->slots[i].state = DC_SLOT_FREE;
			dc_shared->slots[i].caller_pid = 0;
			dc_shared->slots[i].next = (i + 1 < n) ? i + 1 : -1;
		}
		dc_shared->free_head = 0;
		dc_shared->nfree = n;
		dc_shared->cluster_role_ready = false;
		dc_shared->saga_pid = 0;
		dc_shared->saga_latch = NULL;
		for (int i = 0; i < DC_MAX_NODES; i++)
		{
			DcNodeSlot *node = &dc_shared->nodes[i];

			/* the static nodes own the first slots */
			node->in_use = (i < dc_nodes);
			dc_node_name(i, node->name, sizeof(node->name));
			strlcpy(node->roles, "{dc-default}", sizeof(node->roles));
			node->leave_requested = false;
			node->tick_requested = false;
			stats_zero(&node->stats, GetCurrentTimestamp());
			pg_atomic_init_u32(&node->pid, 0);
			dc_shared->nodes[i].latch = NULL;
			dc_shared->nodes[i].inbox_head = -1;
			dc_shared->nodes[i].inbox_tail = -1;
		}
		dc_shared->map_lock = &(GetNamedLWLockTranche("durable_cluster"))[0].lock;
		dc_shared->node_lock = &(GetNamedLWLockTranche("durable_cluster"))[1].lock;
		map_unload();
		dc_shared->refused_version[0] = '\0';
		for (int i = 0; i < DC_MAX_SHARDS; i++)
		{
			dc_shared->owner[i] = -1;
			dc_shared->epoch[i] = 0;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* caller must hold the mutex */
static void
push_free(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];

	s->state = DC_SLOT_FREE;
	s->abandoned = false;
	s->caller_pid = 0;
	s->next = dc_shared->free_head;
	dc_shared->free_head = slot;
	dc_shared->nfree++;
}

/*
 * Give up the slots a backend holds as a caller when it exits, however it
 * exits: those of pid that it has not detached (a tell that returned
 * leaves its slot to the node).  The pid is read without the lock and
 * checked again under it.
 */
static void
give_up_slots_of(pid_t pid)
{
	for (int i = 0; i < dc_shared->nslots; i++)
	{
		DcRequestSlot *s = &dc_shared->slots[i];

		if (s->caller_pid != pid)
			continue;
		SpinLockAcquire(&dc_shared->mutex);
		if (s->caller_pid == pid && !s->detached)
			(void) give_up(i);
		SpinLockRelease(&dc_shared->mutex);
	}
}

static void
give_up_own_slots(int code, Datum arg)
{
	give_up_slots_of(MyProcPid);
}

/*
 * Give up the slots whose caller no longer exists: free those only it
 * could free, mark the others abandoned for the node to free.  The pid is
 * read without the lock and checked again under it; a pid reused by
 * another process keeps its slot, which is the safe mistake.
 */
static void
reclaim_dead_callers(void)
{
	for (int i = 0; i < dc_shared->nslots; i++)
	{
		pid_t		pid = dc_shared->slots[i].caller_pid;

		if (pid == 0 || pid == MyProcPid || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		give_up_slots_of(pid);
	}
}

/*
 * Returns a slot in FILLING state owned by the caller, or -1 if none is
 * free.
 *
 * There are two slots for every backend, so that each may hold one while
 * the other half serves tells that returned and bulk calls.  An extra slot
 * (a bulk call's second and later commands in flight) is given only while
 * more than one per backend stays free: however many bulk calls run, a
 * caller sending one command finds a slot.
 */
int
dc_slot_acquire(bool extra)
{
	static bool callback_registered = false;
	int			slot;

	if (!callback_registered)
	{
		before_shmem_exit(give_up_own_slots, (Datum) 0);
		callback_registered = true;
	}
	if (dc_shared->free_head < 0 && !extra)
		reclaim_dead_callers();

	SpinLockAcquire(&dc_shared->mutex);
	slot = dc_shared->free_head;
	if (extra && dc_shared->nfree <= MaxBackends + 8)
		slot = -1;
	if (slot >= 0)
	{
		DcRequestSlot *s = &dc_shared->slots[slot];

		dc_shared->free_head = s->next;
		dc_shared->nfree--;
		s->state = DC_SLOT_FILLING;
		s->abandoned = false;
		s->accepted = false;
		s->detached = false;
		s->tell = false;
		s->forward_until = 0;
		s->next = -1;
		s->node = -1;
		s->caller_latch = MyLatch;
		s->caller_pid = MyProcPid;
	}
	SpinLockRelease(&dc_shared->mutex);
	return slot;
}

/*
 * Queue a slot at the end of a node's inbox; caller must hold the mutex.
 * Returns the latch to set, or NULL when the inbox already held requests:
 * whoever queued the first of them sets it, and the node takes all of
 * them at once.  (A latch set per request costs a caller sending many a
 * signal to the node for each.)
 */
static Latch *
inbox_append(int slot, int node)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	DcNodeSlot *n = &dc_shared->nodes[node];
	bool		was_empty = (n->inbox_head < 0);

	s->state = DC_SLOT_QUEUED;
	s->node = node;
	s->next = -1;
	s->prev = n->inbox_tail;
	if (n->inbox_tail >= 0)
		dc_shared->slots[n->inbox_tail].next = slot;
	else
		n->inbox_head = slot;
	n->inbox_tail = slot;
	return was_empty ? n->latch : NULL;
}

/* Take a QUEUED slot out of its node's inbox; caller must hold the mutex. */
static void
inbox_unlink(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	DcNodeSlot *n = &dc_shared->nodes[s->node];

	Assert(s->state == DC_SLOT_QUEUED);
	if (s->prev >= 0)
		dc_shared->slots[s->prev].next = s->next;
	else
		n->inbox_head = s->next;
	if (s->next >= 0)
		dc_shared->slots[s->next].prev = s->prev;
	else
		n->inbox_tail = s->prev;
	s->next = s->prev = -1;
}

void
dc_slot_enqueue(int slot, int node)
{
	Latch	   *latch;

	SpinLockAcquire(&dc_shared->mutex);
	Assert(dc_shared->slots[slot].state == DC_SLOT_FILLING);
	latch = inbox_append(slot, node);
	SpinLockRelease(&dc_shared->mutex);

	if (latch)
		SetLatch(latch);
}

DcSlotState
dc_slot_state(int slot)
{
	DcSlotState st;

	SpinLockAcquire(&dc_shared->mutex);
	st = dc_shared->slots[slot].state;
	SpinLockRelease(&dc_shared->mutex);
	return st;
}

bool
dc_slot_accepted(int slot)
{
	bool		accepted;

	SpinLockAcquire(&dc_shared->mutex);
	accepted = dc_shared->slots[slot].accepted;
	SpinLockRelease(&dc_shared->mutex);
	return accepted;
}

/*
 * The node took a TAKEN request as its own (it owns the shard): a dc_tell
 * caller may return now.
 */
void
dc_slot_accept(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	Latch	   *latch = NULL;

	SpinLockAcquire(&dc_shared->mutex);
	s->accepted = true;
	if (!s->abandoned && !s->detached)
		latch = s->caller_latch;
	SpinLockRelease(&dc_shared->mutex);

	if (latch)
		SetLatch(latch);
}

/*
 * A dc_tell caller returns once its request was accepted: from then on the
 * node owns the slot and frees it when done.  False if the node already
 * replied: the caller must read the reply (say, the shard moved) as usual.
 */
bool
dc_slot_detach(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	bool		detached;

	SpinLockAcquire(&dc_shared->mutex);
	detached = (s->state != DC_SLOT_DONE);
	if (detached)
		s->detached = true;
	SpinLockRelease(&dc_shared->mutex);
	return detached;
}

/* Has the caller of this tell returned, leaving the slot to the node? */
bool
dc_slot_detached(int slot)
{
	bool		detached;

	SpinLockAcquire(&dc_shared->mutex);
	detached = dc_shared->slots[slot].detached;
	SpinLockRelease(&dc_shared->mutex);
	return detached;
}

/*
 * A node that found the shard of a detached tell moved queues it to the
 * new owner itself, there being no caller to do it.  False if the slot is
 * not detached (its caller still waits and will route it again).
 */
bool
dc_slot_forward(int slot, int node)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	Latch	   *latch = NULL;
	bool		forwarded = false;

	SpinLockAcquire(&dc_shared->mutex);
	if (s->detached && s->state == DC_SLOT_TAKEN)
	{
		s->accepted = false;
		latch = inbox_append(slot, node);
		forwarded = true;
	}
	SpinLockRelease(&dc_shared->mutex);

	if (latch)
		SetLatch(latch);
	return forwarded;
}

/* The caller is done with a DONE (or still FILLING) slot. */
void
dc_slot_release(int slot)
{
	SpinLockAcquire(&dc_shared->mutex);
	push_free(slot);
	SpinLockRelease(&dc_shared->mutex);
}

/*
 * Give a caller's slot up (caller holds the mutex): out of the inbox and
 * free if no node has it, marked abandoned for the node to free if one
 * took it.  Returns the state it was in.
 */
static DcSlotState
give_up(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	DcSlotState st = s->state;

	if (st == DC_SLOT_QUEUED)
		inbox_unlink(slot);
	if (st == DC_SLOT_DONE || st == DC_SLOT_FILLING || st == DC_SLOT_QUEUED)
		push_free(slot);
	else if (st == DC_SLOT_TAKEN)
		s->abandoned = true;
	return st;
}

/* Set the saga worker's latch, if it runs. */
static void
wake_saga_worker(void)
{
	Latch	   *saga_latch;

	SpinLockAcquire(&dc_shared->mutex);
	saga_latch = dc_shared->saga_latch;
	SpinLockRelease(&dc_shared->mutex);
	if (saga_latch)
		SetLatch(saga_latch);
}

/*
 * dc_cluster exists on this server: the saga worker, which waits for
 * that before it logs in as it, may go on.
 */
void
dc_mark_cluster_role_ready(void)
{
	SpinLockAcquire(&dc_shared->mutex);
	dc_shared->cluster_role_ready = true;
	SpinLockRelease(&dc_shared->mutex);
	wake_saga_worker();
}

/* what the current transaction asked to wake at its commit (DC_WAKE_*) */
static int wake_at_commit_pending = 0;

static void
wake_at_commit_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit_pending & DC_WAKE_NODES)
				request_ticks();
			if (wake_at_commit_pending & DC_WAKE_SAGA_WORKER)
				wake_saga_worker();
			wake_at_commit_pending = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit_pending = 0;
			break;
		default:
			break;
	}
}

/*
 * Wake what (DC_WAKE_*) when the current transaction commits, and not
 * if it does not: what it wrote is what they are to see.
 */
void
dc_wake_at_commit(int what)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(wake_at_commit_callback, NULL);
		registered = true;
	}
	wake_at_commit_pending |= what;
}

/*
 * The caller gives up on its slot.  Returns the state it was in: QUEUED means
 * the command will not be applied, TAKEN means its outcome is unknown.
 */
DcSlotState
dc_slot_abandon(int slot)
{
	DcSlotState st;

	SpinLockAcquire(&dc_shared->mutex);
	st = give_up(slot);
	SpinLockRelease(&dc_shared->mutex);
	return st;
}

/*
 * Take back a request still waiting in an inbox (its shard moved to another
 * node): it leaves the inbox unapplied and is the caller's again (FILLING),
 * to be routed anew.  False if a node already took it.
 */
bool
dc_slot_reclaim(int slot)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	bool		reclaimed = false;

	SpinLockAcquire(&dc_shared->mutex);
	if (s->state == DC_SLOT_QUEUED)
	{
		inbox_unlink(slot);
		s->state = DC_SLOT_FILLING;
		s->node = -1;
		reclaimed = true;
	}
	SpinLockRelease(&dc_shared->mutex);
	return reclaimed;
}

static void
node_detach_callback(int code, Datum arg)
{
	dc_node_detach(DatumGetInt32(arg));
}

/*
 * A node starts serving its inbox.  Slots that an earlier incarnation took
 * but never answered (it exited between taking and replying) are answered
 * now: whether their batch committed is unknown.
 */
void
dc_node_attach(int node)
{
	DcNodeSlot *n = &dc_shared->nodes[node];
	int		   *orphans = palloc(sizeof(int) * dc_shared->nslots);
	int			norphans = 0;
	static const char msg[] =
		"the node restarted while working on this command; it may or may not have been applied";

	SpinLockAcquire(&dc_shared->mutex);
	pg_atomic_write_u32(&n->pid, MyProcPid);
	n->latch = MyLatch;
	SpinLockRelease(&dc_shared->mutex);

	/*
	 * Only this node's process makes a slot TAKEN for it, and none ran, so
	 * those found taken for it stay so: read without the lock, each checked
	 * again under it.
	 */
	for (int i = 0; i < dc_shared->nslots; i++)
	{
		DcRequestSlot *s = &dc_shared->slots[i];
		bool		orphan;

		if (s->state != DC_SLOT_TAKEN || s->node != node)
			continue;
		SpinLockAcquire(&dc_shared->mutex);
		orphan = (s->state == DC_SLOT_TAKEN && s->node == node);
		SpinLockRelease(&dc_shared->mutex);
		if (orphan)
			orphans[norphans++] = i;
	}

	before_shmem_exit(node_detach_callback, Int32GetDatum(node));

	for (int i = 0; i < norphans; i++)
		dc_slot_reply(orphans[i], DC_REPLY_ERROR,
					  ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN, msg, sizeof(msg));
	pfree(orphans);
}

void
dc_node_detach(int node)
{
	DcNodeSlot *n = &dc_shared->nodes[node];

	SpinLockAcquire(&dc_shared->mutex);
	if (pg_atomic_read_u32(&n->pid) == (uint32) MyProcPid)
	{
		pg_atomic_write_u32(&n->pid, 0);
		n->latch = NULL;
	}
	SpinLockRelease(&dc_shared->mutex);
}

/*
 * Take up to max queued requests, oldest first.  (Those their callers gave
 * up on are no longer in the inbox.)
 */
int
dc_inbox_take(int node, int *slots, int max)
{
	DcNodeSlot *n = &dc_shared->nodes[node];
	int			count = 0;

	SpinLockAcquire(&dc_shared->mutex);
	while (n->inbox_head >= 0 && count < max)
	{
		int			i = n->inbox_head;
		DcRequestSlot *s = &dc_shared->slots[i];

		n->inbox_head = s->next;
		s->next = s->prev = -1;
		s->state = DC_SLOT_TAKEN;
		slots[count++] = i;
	}
	if (n->inbox_head < 0)
		n->inbox_tail = -1;
	else
		dc_shared->slots[n->inbox_head].prev = -1;
	SpinLockRelease(&dc_shared->mutex);
	return count;
}

/*
 * The node's answer to the request in slot, which it took: wake its caller,
 * or free the slot if the caller has gone.  Returns whether a caller takes
 * it.
 */
static bool
slot_reply(int slot, DcReplyKind kind, int sqlstate, const void *data, Size len,
		   XLogRecPtr durable_lsn)
{
	DcRequestSlot *s = &dc_shared->slots[slot];
	Latch	   *latch = NULL;

	/* the slot is ours while TAKEN */
	s->reply_kind = kind;
	s->reply_sqlstate = sqlstate;
	s->durable_lsn = durable_lsn;
	s->reply_len = Min(len, DC_REPLY_BYTES);
	if (s->reply_len > 0)
		memcpy(s->reply, data, s->reply_len);

	SpinLockAcquire(&dc_shared->mutex);
	if (s->abandoned || s->detached)
		push_free(slot);
	else
	{
		s->state = DC_SLOT_DONE;
		latch = s->caller_latch;
	}
	SpinLockRelease(&dc_shared->mutex);

	if (latch)
		SetLatch(latch);
	return latch != NULL;
}

void
dc_slot_reply(int slot, DcReplyKind kind, int sqlstate, const void *data, Size len)
{
	(void) slot_reply(slot, kind, sqlstate, data, len, InvalidXLogRecPtr);
}

/*
 * An OK reply that its caller shows once the WAL is durable up to
 * durable_lsn.  Returns whether a caller takes it (and waits for that).
 */
bool
dc_slot_reply_durable(int slot, const void *data, Size len, XLogRecPtr durable_lsn)
{
	return slot_reply(slot, DC_REPLY_OK, 0, data, len, durable_lsn);
}

/*
 * Ask every node to run its tick now (membership or shard map changed) and
 * wake it.
 */
static void
request_ticks(void)
{
	Latch	   *latches[DC_MAX_NODES];
	int			n = 0;

	for (int i = 0; i < DC_MAX_NODES; i++)
	{
		Latch	   *latch;

		SpinLockAcquire(&dc_shared->mutex);
		dc_shared->nodes[i].tick_requested = true;
		latch = dc_shared->nodes[i].latch;
		SpinLockRelease(&dc_shared->mutex);
		if (latch)
			latches[n++] = latch;
	}

	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

bool
dc_node_take_tick_request(int node)
{
	bool		requested;

	SpinLockAcquire(&dc_shared->mutex);
	requested = dc_shared->nodes[node].tick_requested;
	dc_shared->nodes[node].tick_requested = false;
	SpinLockRelease(&dc_shared->mutex);
	return requested;
}

bool
dc_node_leave_requested(int node)
{
	bool		requested;

	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	requested = dc_shared->nodes[node].leave_requested;
	LWLockRelease(dc_shared->node_lock);
	return requested;
}

/* caller must hold node_lock */
static int
find_node(const char *name)
{
	for (int i = 0; i < DC_MAX_NODES; i++)
		if (dc_shared->nodes[i].in_use && strcmp(dc_shared->nodes[i].name, name) == 0)
			return i;
	return -1;
}

/* The name of the node in slot node (NAMEDATALEN bytes). */
void
dc_node_slot_name(int node, char *name)
{
	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	strlcpy(name, dc_shared->nodes[node].name, NAMEDATALEN);
	LWLockRelease(dc_shared->node_lock);
}

/* Its name and roles (DC_ROLES_BYTES), for the node starting in it. */
void
dc_node_slot_identity(int node, char *name, char *roles)
{
	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	strlcpy(name, dc_shared->nodes[node].name, NAMEDATALEN);
	strlcpy(roles, dc_shared->nodes[node].roles, DC_ROLES_BYTES);
	LWLockRelease(dc_shared->node_lock);
}

/* Does a process run the node in slot node? */
bool
dc_node_running(int node)
{
	return pg_atomic_read_u32(&dc_shared->nodes[node].pid) != 0;
}

/*
 * The names of the node slots in use whose node runs (running) or does not
 * (!running); returns how many.
 */
int
dc_node_names(char (*names)[NAMEDATALEN], bool running)
{
	int			n = 0;

	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	for (int i = 0; i < DC_MAX_NODES; i++)
		if (dc_shared->nodes[i].in_use && dc_node_running(i) == running)
			strlcpy(names[n++], dc_shared->nodes[i].name, NAMEDATALEN);
	LWLockRelease(dc_shared->node_lock);
	return n;
}

/* The name and statistics of the node in slot node; false if the slot is not in use. */
bool
dc_node_stats_copy(int node, char *name, DcNodeStats *stats)
{
	bool		in_use;

	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	in_use = dc_shared->nodes[node].in_use;
	strlcpy(name, dc_shared->nodes[node].name, NAMEDATALEN);
	LWLockRelease(dc_shared->node_lock);
	SpinLockAcquire(&dc_shared->mutex);
	*stats = dc_shared->nodes[node].stats;
	SpinLockRelease(&dc_shared->mutex);
	return in_use;
}

int
dc_node_find(const char *name)
{
	int			node;

	LWLockAcquire(dc_shared->node_lock, LW_SHARED);
	node = find_node(name);
	LWLockRelease(dc_shared->node_lock);
	return node;
}

/*
 * Reserve a free node slot below durable_cluster.max_nodes for a worker
 * started by dc_add_node.  A NULL name means "node-<slot number>".  Returns
 * the slot, -1 if none is free, -2 if the name is taken.
 */
int
dc_node_slot_claim(const char *name, const char *roles)
{
	int			slot = -1;
	TimestampTz now = GetCurrentTimestamp();

	LWLockAcquire(dc_shared->node_lock, LW_EXCLUSIVE);
	if (name && find_node(name) >= 0)
		slot = -2;
	else
	{
		for (int i = 0; i < dc_max_nodes && slot < 0; i++)
		{
			DcNodeSlot *node = &dc_shared->nodes[i];
			char		default_name[NAMEDATALEN];

			if (node->in_use || dc_node_running(i))
				continue;
			dc_node_name(i, default_name, sizeof(default_name));
			if (name == NULL && find_node(default_name) >= 0)
				continue;
			node->in_use = true;
			strlcpy(node->name, name ? name : default_name, sizeof(node->name));
			strlcpy(node->roles, roles, sizeof(node->roles));
			node->leave_requested = false;
			/*
			 * Requests left in the inbox of the node that had the slot
			 * stay: the new node answers them "moved" (their shards are
			 * not its own yet), so their callers route them again.
			 */
			SpinLockAcquire(&dc_shared->mutex);
			node->tick_requested = false;
			stats_zero(&node->stats, now);
			SpinLockRelease(&dc_shared->mutex);
			slot = i;
		}
	}
	LWLockRelease(dc_shared->node_lock);
	return slot;
}

void
dc_node_slot_release(int node)
{
	LWLockAcquire(dc_shared->node_lock, LW_EXCLUSIVE);
	dc_shared->nodes[node].in_use = false;
	dc_shared->nodes[node].leave_requested = false;
	LWLockRelease(dc_shared->node_lock);
}

/* Ask a running node to leave for good; returns its slot or -1. */
int
dc_node_request_leave(const char *name)
{
	int			node;
	Latch	   *latch = NULL;

	LWLockAcquire(dc_shared->node_lock, LW_EXCLUSIVE);
	node = find_node(name);
	if (node >= 0 && dc_node_running(node))
		dc_shared->nodes[node].leave_requested = true;
	else
		node = -1;
	LWLockRelease(dc_shared->node_lock);
	if (node >= 0)
	{
		SpinLockAcquire(&dc_shared->mutex);
		latch = dc_shared->nodes[node].latch;
		SpinLockRelease(&dc_shared->mutex);
	}

	if (latch)
		SetLatch(latch);
	return node;
}

/*
 * Zero a node's counters (caller holds the mutex, or the node slot is not
 * shared yet).  The gauge entities_in_memory is the node's to set.
 */
static void
stats_zero(DcNodeStats *stats, TimestampTz now)
{
	stats->commands = 0;
	stats->batches = 0;
	stats->passivations = 0;
	stats->last_batch_at = 0;
	stats->stats_reset = now;
}

/* dc_stats_reset(): every node's counters, one node at a time */
void
dc_stats_reset_all(TimestampTz now)
{
	for (int i = 0; i < DC_MAX_NODES; i++)
	{
		SpinLockAcquire(&dc_shared->mutex);
		stats_zero(&dc_shared->nodes[i].stats, now);
		SpinLockRelease(&dc_shared->mutex);
	}
}

/*
 * A node reports what it did since its last report: commands applied (a
 * batch when > 0, at batch_at), entities passivated, and how many entities
 * and how much memory it now holds (memory < 0: not measured this time).
 */
void
dc_node_report(int node, int64 entities, int64 memory, int commands, int passivations,
			   TimestampTz batch_at)
{
	DcNodeSlot *n = &dc_shared->nodes[node];

	SpinLockAcquire(&dc_shared->mutex);
	n->stats.entities_in_memory = entities;
	if (memory >= 0)
		n->stats.memory_bytes = memory;
	n->stats.passivations += passivations;
	if (commands > 0)
	{
		n->stats.commands += commands;
		n->stats.batches++;
		n->stats.last_batch_at = batch_at;
	}
	SpinLockRelease(&dc_shared->mutex);
}

/* The number of shards of the shard map; 0 while none is loaded. */
int
dc_map_number_of_shards(void)
{
	int			n;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	n = dc_shared->number_of_shards;
	LWLockRelease(dc_shared->map_lock);
	return n;
}

/*
 * The owner of shard by the shard map, if the map still has nshards shards
 * (the shard was computed for that many): a node slot of this server
 * (>= 0), DC_OWNER_NONE, or a node of another server, whose host:port is
 * then copied to address (DC_ADDRESS_BYTES).
 */
int
dc_map_owner(int shard, int nshards, char *address)
{
	int			owner = DC_OWNER_NONE;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->number_of_shards == nshards && shard >= 0 && shard < nshards)
		owner = dc_shared->owner[shard];
	if (owner < DC_OWNER_NONE)
		strlcpy(address, dc_shared->remote[DC_REMOTE_INDEX(owner)], DC_ADDRESS_BYTES);
	LWLockRelease(dc_shared->map_lock);
	return owner;
}

/*
 * The owner code of the map for a member at address with node slot
 * node_index: a slot of this server's, or an entry of remote[] (added if
 * new; DC_OWNER_NONE when remote[] is full).  For dc_map_install's caller,
 * which gathers a map read from the store.
 */
int16
dc_map_owner_code(const char *address, int node_index,
				  char (*remote)[DC_ADDRESS_BYTES], int *nremote)
{
	int			r;

	if (strcmp(address, dc_self_address()) == 0)
		return (int16) node_index;
	for (r = 0; r < *nremote && strcmp(remote[r], address) != 0; r++)
		;
	if (r == DC_MAX_REMOTE_SERVERS || strlen(address) >= DC_ADDRESS_BYTES)
		return DC_OWNER_NONE;
	if (r == *nremote)
		strlcpy(remote[(*nremote)++], address, DC_ADDRESS_BYTES);
	return DC_OWNER_REMOTE(r);
}

/* Is the map in shared memory not the one of version of extension, or older? */
bool
dc_map_older_than(Oid extension, int64 version)
{
	bool		older;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	older = (dc_shared->map_extension != extension || dc_shared->map_version < version);
	LWLockRelease(dc_shared->map_lock);
	return older;
}

/*
 * Install a map read from the store (owner codes from dc_map_owner_code),
 * unless shared memory got one at least as new meanwhile.  Returns true if
 * it was installed.
 */
bool
dc_map_install(Oid extension, int64 version, int nshards, const int16 *owner,
			   const int64 *epoch, char (*remote)[DC_ADDRESS_BYTES], int nremote)
{
	bool		installed = false;

	Assert(nshards > 0 && nshards <= DC_MAX_SHARDS && nremote <= DC_MAX_REMOTE_SERVERS);
	LWLockAcquire(dc_shared->map_lock, LW_EXCLUSIVE);
	if (dc_shared->map_extension != extension || dc_shared->map_version < version)
	{
		dc_shared->map_extension = extension;
		dc_shared->map_version = version;
		dc_shared->number_of_shards = nshards;
		memcpy(dc_shared->owner, owner, sizeof(int16) * nshards);
		memcpy(dc_shared->epoch, epoch, sizeof(int64) * nshards);
		memcpy(dc_shared->remote, remote, nremote * DC_ADDRESS_BYTES);
		dc_shared->nremote = nremote;
		installed = true;
	}
	LWLockRelease(dc_shared->map_lock);
	return installed;
}

/*
 * The shards node owns by the map, unless the map is the one *seen names
 * (then false, and nothing changes): epoch[i] is the epoch of shard i if
 * the node owns it, else 0, for every i < DC_MAX_SHARDS; *nshards the
 * map's number of shards; *seen the map now.
 */
bool
dc_map_owned(int node, DcMapSeen *seen, int *nshards, int64 *epoch)
{
	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->map_version == seen->version && dc_shared->map_extension == seen->extension)
	{
		LWLockRelease(dc_shared->map_lock);
		return false;
	}
	*nshards = dc_shared->number_of_shards;
	for (int i = 0; i < DC_MAX_SHARDS; i++)
		epoch[i] = (i < *nshards && dc_shared->owner[i] == node) ? dc_shared->epoch[i] : 0;
	seen->version = dc_shared->map_version;
	seen->extension = dc_shared->map_extension;
	LWLockRelease(dc_shared->map_lock);
	return true;
}

/* No shard map loaded: the caller holds map_lock, or sets shared memory up. */
static void
map_unload(void)
{
	dc_shared->map_extension = InvalidOid;
	dc_shared->map_version = -1;
	dc_shared->number_of_shards = 0;
}

/*
 * Unload the shard map unless it was loaded from extension: a node that
 * forgets everything (the extension went away or came back) leaves callers
 * no map of an extension that is gone.
 */
void
dc_map_forget(Oid extension)
{
	LWLockAcquire(dc_shared->map_lock, LW_EXCLUSIVE);
	if (dc_shared->map_extension != extension)
		map_unload();
	LWLockRelease(dc_shared->map_lock);
}

/*
 * This server's nodes refuse to serve the store's extension of version
 * (its SQL objects and this library disagree): the shard map is unloaded,
 * so that callers here are told at once instead of being routed to nodes
 * that left.  NULL: they serve again.
 */
void
dc_map_refuse(const char *version)
{
	LWLockAcquire(dc_shared->map_lock, LW_EXCLUSIVE);
	if (version)
	{
		strlcpy(dc_shared->refused_version, version, NAMEDATALEN);
		map_unload();
	}
	else
		dc_shared->refused_version[0] = '\0';
	LWLockRelease(dc_shared->map_lock);
}

/* Do this server's nodes refuse the store's extension?  Its version then (NAMEDATALEN). */
bool
dc_map_refused(char *version)
{
	bool		refused;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	refused = dc_shared->refused_version[0] != '\0';
	strlcpy(version, dc_shared->refused_version, NAMEDATALEN);
	LWLockRelease(dc_shared->map_lock);
	return refused;
}

/*
 * Raise an error unless the library was preloaded (so that shared memory
 * is there) and serves this database.
 */
void
dc_check_usable(void)
{
	static bool database_checked = false;

	if (!dc_preloaded || dc_shared == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("durable_cluster must be loaded via shared_preload_libraries"),
				errhint("Add durable_cluster to shared_preload_libraries in postgresql.conf and restart the server."));

	if (!database_checked)
	{
		char	   *here = get_database_name(MyDatabaseId);

		if (here == NULL || strcmp(here, dc_database) != 0)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("durable_cluster nodes serve database \"%s\", not \"%s\"",
						   dc_database, here ? here : "?"),
					errhint("Connect to \"%s\", or set durable_cluster.database = '%s' and restart the server.",
							dc_database, here ? here : "?"));
		database_checked = true;
	}

	/*
	 * On a server without nodes nobody else tells the saga worker that
	 * dc_cluster exists (CREATE EXTENSION made it); a command sent at
	 * commit here needs that worker.
	 */
	if (!dc_shared->cluster_role_ready && OidIsValid(get_role_oid(DC_CLUSTER_ROLE, true)))
		dc_mark_cluster_role_ready();
}
