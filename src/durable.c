/*-------------------------------------------------------------------------
 *
 * durable.c
 *	  When a reply or a read may be shown: once the WAL it depends on is
 *	  flushed and, where the session's synchronous_commit asks for it,
 *	  confirmed by the synchronous standbys.
 *
 * A node that writes its store in its own process (store_local.c) commits
 * its batches with synchronous_commit = off: the commit record is in the
 * WAL, the batch visible, but the node does not wait for the flush.  It
 * goes on with the next batch while the caller's backend, here, waits for
 * the flush of the WAL up to the reply's position, as its own commit
 * would (XLogFlush: one flush covers every batch and commit before it,
 * and many waiting callers share it, PostgreSQL's group commit).  So the
 * node never holds WALWriteLock, which every commit of the server needs:
 * a node stopped while it runs (SIGSTOP, a stalled machine) does not stop
 * the server's commits (docs/design.md, "A paused node").
 *
 * A caller gets its reply only after this wait; a caller whose session
 * has synchronous_commit = off does not wait, as for its own commits.
 * Whoever reads what nodes wrote through the API (dc.get_state,
 * dc.command_outcome, dc.sagas) waits for the WAL up to where it was when
 * it read, so that it never shows a state a crash could still take back.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/lwlock.h"

#include "durable.h"
#include "settings.h"

PG_FUNCTION_INFO_V1(dc_wait_durable_sql);

/*
 * Have the synchronous standbys confirmed the WAL up to lsn, as this
 * session's synchronous_commit asks?
 */
static bool
standbys_confirmed(XLogRecPtr lsn)
{
	int			mode;
	bool		confirmed;

	if (synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_WRITE)
		mode = SYNC_REP_WAIT_WRITE;
	else if (synchronous_commit == SYNCHRONOUS_COMMIT_REMOTE_APPLY)
		mode = SYNC_REP_WAIT_APPLY;
	else
		mode = SYNC_REP_WAIT_FLUSH;
	LWLockAcquire(SyncRepLock, LW_SHARED);
	confirmed = (WalSndCtl->lsn[mode] >= lsn);
	LWLockRelease(SyncRepLock);
	return confirmed;
}

void
dc_wait_durable(XLogRecPtr lsn)
{
	if (XLogRecPtrIsInvalid(lsn) || RecoveryInProgress() ||
		synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		return;

	XLogFlush(lsn);

	if (!SyncRepRequested() || SyncRepStandbyNames == NULL ||
		SyncRepStandbyNames[0] == '\0')
		return;

	/*
	 * A cancel or a terminate ends this wait with a warning, as it ends a
	 * commit's; the caller must then not take the reply as confirmed.
	 */
	SyncRepWaitForLSN(lsn, true);
	if (!standbys_confirmed(lsn))
		ereport(ERROR,
				errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
				errmsg("the wait for synchronous standbys to confirm the command ended before they did"),
				errdetail("It was applied and committed on this server, but a failover to a standby may still lose it."),
				errhint(DC_RETRY_HINT));
}

/*
 * The end of the WAL inserted so far.  GetXLogInsertRecPtr() gives where
 * the next record would start, which at a page boundary is past the page
 * header nobody has written yet: a flush request for it would fail ("xlog
 * flush request ... is not satisfied").  Step back over such a header
 * (PostgreSQL 17's GetXLogInsertEndRecPtr() does the same).
 */
XLogRecPtr
dc_wal_insert_end(void)
{
	XLogRecPtr	lsn = GetXLogInsertRecPtr();

	if (XLogSegmentOffset(lsn, wal_segment_size) == SizeOfXLogLongPHD)
		return lsn - SizeOfXLogLongPHD;
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return lsn - SizeOfXLogShortPHD;
	return lsn;
}

void
dc_wait_durable_now(void)
{
	if (RecoveryInProgress())
		return;
	dc_wait_durable(dc_wal_insert_end());
}

/*
 * durable_cluster.wait_durable(): true once everything committed so far is
 * durable.  Views showing what nodes write gate their rows on it.
 */
Datum
dc_wait_durable_sql(PG_FUNCTION_ARGS)
{
	dc_wait_durable_now();
	PG_RETURN_BOOL(true);
}
