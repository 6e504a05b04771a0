/*-------------------------------------------------------------------------
 *
 * shared_memory.h
 *	  Shared memory of durable_cluster: the shard map, the node table and
 *	  the request slots through which callers hand commands to nodes.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_SHARED_MEMORY_H
#define DC_SHARED_MEMORY_H

#include "postgres_ext.h"
#include "access/xlogdefs.h"
#include "port/atomics.h"
#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#include "entity.h"
#include "settings.h"

/* room for a reply document or an error message */
#define DC_REPLY_BYTES			4096

/* room for a node's roles, as a text[] literal */
#define DC_ROLES_BYTES			256

/* other servers whose nodes own shards, and room for their addresses */
#define DC_MAX_REMOTE_SERVERS	64
#define DC_ADDRESS_BYTES		64

/*
 * A shard's owner in the map: a node slot of this server (>= 0), none
 * (-1), or a node of the server remote[DC_REMOTE_INDEX(owner)].
 */
#define DC_OWNER_NONE			(-1)
#define DC_OWNER_REMOTE(r)		((int16) (-2 - (r)))
#define DC_REMOTE_INDEX(owner)	(-2 - (owner))

typedef enum DcSlotState
{
	DC_SLOT_FREE,				/* on the free list */
	DC_SLOT_FILLING,			/* owned by its caller, not yet queued */
	DC_SLOT_QUEUED,				/* in a node's inbox */
	DC_SLOT_TAKEN,				/* a node is working on it */
	DC_SLOT_DONE				/* reply written, caller may read it */
} DcSlotState;

typedef enum DcReplyKind
{
	DC_REPLY_OK,				/* reply holds a jsonb document */
	DC_REPLY_ERROR,				/* reply holds an error message */
	DC_REPLY_MOVED				/* the node does not own the shard: route again */
} DcReplyKind;

typedef struct DcRequestSlot
{
	/* protected by DcShared->mutex */
	DcSlotState state;
	bool		abandoned;		/* caller gave up; whoever finishes frees it */
	bool		accepted;		/* the owner took it as its own (dc_tell waits for this) */
	bool		detached;		/* a dc_tell that returned: the node frees the slot */
	int			next;			/* free list or inbox link, -1 = end */
	int			prev;			/* inbox link back, -1 = first */
	int			node;			/* inbox it was queued to */
	Latch	   *caller_latch;
	pid_t		caller_pid;		/* backend that acquired it, 0 when free */

	/* written by the caller while FILLING, read by the node while TAKEN */
	int			shard;
	int			number_of_shards;
	char		mall_id[DC_MAX_ID_BYTES + 1];
	char		user_id[DC_MAX_ID_BYTES + 1];
	DcCommand	command;
	bool		tell;			/* dc_tell: wake the caller once accepted */
	TimestampTz forward_until;	/* a node handing on a detached tell gives up then */

	/* written by the node while TAKEN, read by the caller once DONE */
	DcReplyKind reply_kind;
	int			reply_sqlstate;
	XLogRecPtr	durable_lsn;	/* OK: shown once the WAL is durable up to
								 * here (durable.c); InvalidXLogRecPtr = now */
	Size		reply_len;
	char		reply[DC_REPLY_BYTES];
} DcRequestSlot;

/* A node's statistics (dc_node_stats); counters are zeroed by dc_stats_reset() */
typedef struct DcNodeStats
{
	int64		entities_in_memory;
	int64		memory_bytes;	/* the node's memory contexts, all of them */
	int64		commands;		/* commands applied (not routed elsewhere) */
	int64		batches;		/* batches that applied at least one */
	int64		passivations;
	TimestampTz last_batch_at;	/* 0 = none yet */
	TimestampTz stats_reset;
} DcNodeStats;

typedef struct DcNodeSlot
{
	/* who the node is: protected by DcShared->node_lock */
	bool		in_use;			/* assigned to a node worker (static or added) */
	char		name[NAMEDATALEN];
	char		roles[DC_ROLES_BYTES];	/* text[] literal */
	bool		leave_requested;	/* dc_remove_node: leave and do not come back */

	/* its process: written under DcShared->mutex; pid read without it too */
	pg_atomic_uint32 pid;		/* 0 when the node is not running */
	Latch	   *latch;

	/* protected by DcShared->mutex */
	bool		tick_requested; /* membership or shard map changed */
	int			inbox_head;
	int			inbox_tail;
	DcNodeStats stats;
} DcNodeSlot;

/* the locks: see shared_memory.c */
typedef struct DcShared
{
	slock_t		mutex;			/* request slots, inboxes, nodes' processes */
	LWLock	   *node_lock;		/* nodes' identities */
	bool		cluster_role_ready; /* dc_cluster exists on this server */
	pid_t		saga_pid;		/* the saga worker, 0 when it does not run */
	Latch	   *saga_latch;		/* and its latch, NULL then */
	int			free_head;
	int			nfree;			/* slots on the free list */
	int			nslots;
	DcNodeSlot	nodes[DC_MAX_NODES];

	/* shard map, a copy of the shards table; protected by map_lock */
	LWLock	   *map_lock;
	Oid			map_extension;	/* pg_extension oid it was loaded from */
	int64		map_version;	/* settings.map_version it was loaded from */
	int			number_of_shards;	/* 0 = not loaded */
	int16		owner[DC_MAX_SHARDS];	/* see DC_OWNER_NONE */
	int64		epoch[DC_MAX_SHARDS];
	int			nremote;
	char		remote[DC_MAX_REMOTE_SERVERS][DC_ADDRESS_BYTES];	/* host:port */
	/* the store's extension version this server's nodes refuse, "" = none */
	char		refused_version[NAMEDATALEN];

	DcRequestSlot slots[FLEXIBLE_ARRAY_MEMBER];
} DcShared;

extern DcShared *dc_shared;

extern Size dc_shmem_size(void);
extern void dc_shmem_init(void);

extern void dc_mark_cluster_role_ready(void);

/* Raise an error unless the library was preloaded and serves this database. */
extern void dc_check_usable(void);

/* what dc_wake_at_commit wakes */
#define DC_WAKE_NODES			0x01	/* every node runs its tick at once */
#define DC_WAKE_SAGA_WORKER		0x02	/* the saga worker runs its round at once */
extern void dc_wake_at_commit(int what);

/* the shard map */
extern int	dc_map_number_of_shards(void);
extern int	dc_map_owner(int shard, int nshards, char *address);
extern int16 dc_map_owner_code(const char *address, int node_index,
							   char (*remote)[DC_ADDRESS_BYTES], int *nremote);
extern bool dc_map_older_than(Oid extension, int64 version);
extern bool dc_map_install(Oid extension, int64 version, int nshards, const int16 *owner,
						   const int64 *epoch, char (*remote)[DC_ADDRESS_BYTES], int nremote);

/* which map a node last took its shards from (dc_map_owned) */
typedef struct DcMapSeen
{
	int64		version;
	Oid			extension;
} DcMapSeen;
extern bool dc_map_owned(int node, DcMapSeen *seen, int *nshards, int64 *epoch);
extern void dc_map_forget(Oid extension);
extern void dc_map_refuse(const char *version);
extern bool dc_map_refused(char *version);

/* node slots */
extern int	dc_node_slot_claim(const char *name, const char *roles);
extern void dc_node_slot_release(int node);
extern int	dc_node_find(const char *name);
extern void dc_node_slot_name(int node, char *name);
extern void dc_node_slot_identity(int node, char *name, char *roles);
extern bool dc_node_running(int node);
extern int	dc_node_names(char (*names)[NAMEDATALEN], bool running);
extern bool dc_node_stats_copy(int node, char *name, DcNodeStats *stats);
extern void dc_stats_reset_all(TimestampTz now);
extern int	dc_node_request_leave(const char *name);
extern bool dc_node_take_tick_request(int node);
extern bool dc_node_leave_requested(int node);
extern void dc_node_report(int node, int64 entities, int64 memory, int commands,
						   int passivations,
						   TimestampTz batch_at);

/* caller side */
extern int	dc_slot_acquire(bool extra);
extern void dc_slot_enqueue(int slot, int node);
extern DcSlotState dc_slot_state(int slot);
extern bool dc_slot_accepted(int slot);
extern void dc_slot_accept(int slot);
extern bool dc_slot_detach(int slot);
extern bool dc_slot_forward(int slot, int node);
extern bool dc_slot_detached(int slot);
extern void dc_slot_release(int slot);
extern DcSlotState dc_slot_abandon(int slot);
extern bool dc_slot_reclaim(int slot);

/* node side */
extern void dc_node_attach(int node);
extern void dc_node_detach(int node);
extern int	dc_inbox_take(int node, int *slots, int max);
extern void dc_slot_reply(int slot, DcReplyKind kind, int sqlstate,
						  const void *data, Size len);
extern bool dc_slot_reply_durable(int slot, const void *data, Size len,
								  XLogRecPtr durable_lsn);

#endif							/* DC_SHARED_MEMORY_H */
