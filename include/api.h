/*-------------------------------------------------------------------------
 *
 * api.h
 *	  The caller's side of a command (api.c), shared with the transfers of
 *	  saga.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_API_H
#define DC_API_H

#include "fmgr.h"
#include "utils/jsonb.h"

#include "entity.h"

/* An entity id argument: not NULL, not empty, at most DC_MAX_ID_BYTES. */
extern char *dc_id_argument(FunctionCallInfo fcinfo, int argno, const char *what);

/*
 * Hand a validated command to the owner of its shard; returns its reply
 * (NULL for a tell, once the owner has it).
 */
extern Jsonb *dc_ask(const char *mall_id, const char *user_id, const DcCommand *cmd,
					 bool tell);

#endif							/* DC_API_H */
