/*-------------------------------------------------------------------------
 *
 * durable.h
 *	  When a reply or a read may be shown: the WAL flush (and the
 *	  synchronous standbys' confirmation) that a node's asynchronous
 *	  commit leaves to whoever shows its result (durable.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_DURABLE_H
#define DC_DURABLE_H

#include "access/xlogdefs.h"

/*
 * Wait until the WAL up to lsn is flushed and, if this session's
 * synchronous_commit asks for it, confirmed by the synchronous standbys.
 * Nothing to do for InvalidXLogRecPtr.  Raises 40003 if a cancel ends the
 * wait for the standbys: the commands were committed here, but not
 * confirmed.
 */
extern void dc_wait_durable(XLogRecPtr lsn);

/* The end of the WAL inserted so far on this server. */
extern XLogRecPtr dc_wal_insert_end(void);

/* The same for everything committed so far on this server (readers). */
extern void dc_wait_durable_now(void);

#endif							/* DC_DURABLE_H */
