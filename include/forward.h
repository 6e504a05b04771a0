/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  Commands forwarded to the server whose node owns their shard, and
 *	  reads of a store on another server (forward.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_FORWARD_H
#define DC_FORWARD_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "entity.h"

/* true while this backend serves a command another server forwarded */
extern bool dc_serving_forward;

extern Jsonb *dc_forward(const char *address, const char *mall_id, const char *user_id,
						 const DcCommand *cmd, bool tell, TimestampTz deadline,
						 bool *moved);
extern Jsonb *dc_moved_reply(void);
extern char *dc_store_value(const char *sql, int nparams, const char *const *values);

#endif							/* DC_FORWARD_H */
