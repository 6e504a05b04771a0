/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  Commands forwarded to the server whose node owns their shard, reads
 *	  of a store on another server, and connecting without blocking
 *	  (forward.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_FORWARD_H
#define DC_FORWARD_H

#include "datatype/timestamp.h"
#include "libpq-fe.h"
#include "utils/jsonb.h"

#include "entity.h"

/*
 * The format of durable_cluster.forward()'s arguments; a server refuses a
 * command forwarded in another.
 */
#define DC_FORWARD_FORMAT		1

/* true while this backend serves a command another server forwarded */
extern bool dc_serving_forward;

extern Jsonb *dc_forward(const char *address, const char *role,
						 const char *mall_id, const char *user_id,
						 const DcCommand *cmd, bool tell, TimestampTz deadline,
						 bool *moved);
extern Jsonb *dc_moved_reply(void);
extern char *dc_cluster_session_options(bool node_session);
extern char *dc_libpq_error(PGconn *conn);
extern void dc_raise_result_error(PGresult *res, const char *fallback,
								  const char *context) pg_attribute_noreturn();
extern PGconn *dc_connect(const char *const *keywords, const char *const *values,
						  bool expand_dbname, TimestampTz deadline);
extern char *dc_store_value(const char *sql, int nparams, const char *const *values);

#endif							/* DC_FORWARD_H */
