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

/*
 * The saga worker's rounds over this server's pending commands: sending
 * them, and removing old outcomes.  Each returns true when more may wait.
 */
extern bool dc_at_commit_round(MemoryContext cxt);
extern bool dc_at_commit_retention(void);

#endif							/* DC_AT_COMMIT_H */
