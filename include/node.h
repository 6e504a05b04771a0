/*-------------------------------------------------------------------------
 *
 * node.h
 *	  The node background worker (node.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_NODE_H
#define DC_NODE_H

#include "postmaster/bgworker.h"

/* Fill in the background worker that runs node slot index. */
extern void dc_node_worker(BackgroundWorker *worker, int index);

extern PGDLLEXPORT void dc_node_main(Datum main_arg);

#endif							/* DC_NODE_H */
