/*-------------------------------------------------------------------------
 *
 * remote.h
 *	  A caller's sessions to other servers of the cluster (remote.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_REMOTE_H
#define DC_REMOTE_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"

extern PGresult *dc_remote_exec(const char *address, const char *sql, int nparams,
								const char *const *values, TimestampTz connect_by,
								TimestampTz deadline, bool is_command, char **why);

/* The first column of the first row of a statement run on the store elsewhere; NULL if none. */
extern char *dc_store_value(const char *sql, int nparams, const char *const *values);

#endif							/* DC_REMOTE_H */
