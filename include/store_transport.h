/*-------------------------------------------------------------------------
 *
 * store_transport.h
 *	  How a node's batches reach the store: the operations a transport
 *	  provides, chosen once when the node starts.
 *
 * Two transports exist.  The in-process one (store_local.c) is used when
 * the store is the node's own server: the node reads and writes the
 * tables itself, in transactions of its own, with store_batch.c.  The
 * libpq one (store.c) sends the same batch to durable_cluster.load_batch()
 * and write_batch() in a backend of a store on another server.  Both end
 * in store_batch.c, so a batch is loaded, fenced and written by one code
 * path whichever way it travels.
 *
 * Membership, heartbeats, the shard map and batches with registered
 * commands (whose handlers run in a store session, under its
 * statement_timeout) always use the libpq session of store.c.
 *
 * What every transport promises:
 *
 * - load_batch reads committed state and takes no row lock; an entity or
 *	 logged reply another transaction has open (a paused former owner's)
 *	 is waited for, once per batch and at most lock_timeout, and otherwise
 *	 comes back marked held, not loaded.  It may open
 *	 the batch's transaction, which write_batch or release_batch ends: what
 *	 is loaded and what is written are then one transaction, and an entity
 *	 not in memory costs no round trip of its own.
 * - write_batch checks the fence in the transaction of the writes; it
 *	 returns the number of shards found fenced, listed in fenced[], and
 *	 then nothing was committed; so with held[] (*nheld of them), the
 *	 entities (rows of batch->writes) another transaction held open.  When
 *	 it returns 0 the batch is committed, and its replies may go out to
 *	 callers who wait for durable_lsn (durable.c).  It raises an error if the batch could not be
 *	 written; nothing was committed then, unless the error says the
 *	 outcome is unknown (SQLSTATE 40003, a connection lost after the
 *	 commit was sent), which only a transport over a network can raise.
 * - release_batch gives up whatever the batch still holds: after an error,
 *	 or when the batch ended without a write (it only read, from memory, or
 *	 its writes went over the libpq session with its registered commands).
 *	 The transport is usable afterwards.
 * - durable_lsn says, after a batch, up to where the WAL must be flushed
 *	 (and confirmed by synchronous standbys) before its replies are shown:
 *	 InvalidXLogRecPtr when the transport's commit waited for that itself
 *	 and what it loaded was durable already.
 * - Nothing is held between batches, and no wait is unbounded: row locks
 *	 wait at most lock_timeout, statements at most failure_timeout.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_STORE_TRANSPORT_H
#define DC_STORE_TRANSPORT_H

#include "access/xlogdefs.h"

#include "store_batch.h"

typedef struct DcStoreTransport
{
	void		(*load_batch) (DcEntityLoad *loads, int nloads,
							   DcCommandLog *lookups, int nlookups);
	int			(*write_batch) (const char *node_name, const DcBatchWrite *batch,
								int *fenced, int *held, int *nheld);
	void		(*release_batch) (void);
	XLogRecPtr	(*durable_lsn) (void);
} DcStoreTransport;

extern const DcStoreTransport dc_local_transport;

#endif							/* DC_STORE_TRANSPORT_H */
