/*-------------------------------------------------------------------------
 *
 * retention.h
 *	  Removal of old command log entries and finished transfers
 *	  (retention.c), run by the saga worker of the store's server.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_RETENTION_H
#define DC_RETENTION_H

/* one round, in the caller's transaction; true: run another at once */
extern bool dc_retention_round(void);

#endif							/* DC_RETENTION_H */
