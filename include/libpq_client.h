/*-------------------------------------------------------------------------
 *
 * libpq_client.h
 *	  What every libpq session of the cluster shares (libpq_client.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_LIBPQ_CLIENT_H
#define DC_LIBPQ_CLIENT_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "storage/latch.h"

#include "pg_compat.h"

typedef enum DcPqWait
{
	DC_PQ_READY,				/* a whole result is there */
	DC_PQ_TIMED_OUT,			/* the deadline passed */
	DC_PQ_LOST					/* the connection broke */
} DcPqWait;

/* the "options" of every session the cluster opens (node_session: a node's store session) */
extern char *dc_cluster_session_options(bool node_session);
extern PGconn *dc_connect(const char *const *keywords, const char *const *values,
						  bool expand_dbname, TimestampTz deadline);
extern bool dc_pq_wait_socket(PGconn *conn, bool writable, TimestampTz deadline);
extern DcPqWait dc_pq_await(PGconn *conn, WaitEventSet *set, TimestampTz deadline,
							bool interruptible);
extern char *dc_libpq_error(PGconn *conn);
pg_noreturn extern void dc_raise_result_error(PGresult *res, const char *fallback,
											  const char *context);

#endif							/* DC_LIBPQ_CLIENT_H */
