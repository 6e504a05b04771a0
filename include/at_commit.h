/*-------------------------------------------------------------------------
 *
 * at_commit.h
 *	  Commands applied once their caller's transaction commits
 *	  (at_commit.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_AT_COMMIT_H
#define DC_AT_COMMIT_H

#include "utils/memutils.h"

/* One round of the saga worker over this server's pending commands. */
extern void dc_at_commit_round(MemoryContext cxt);

#endif							/* DC_AT_COMMIT_H */
