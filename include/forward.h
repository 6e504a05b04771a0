/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  Commands forwarded to the server whose node owns their shard
 *	  (forward.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_FORWARD_H
#define DC_FORWARD_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "entity.h"

/*
 * The format of durable_cluster.forward()'s arguments; a server refuses a
 * command forwarded in another.
 */
#define DC_FORWARD_FORMAT		1

extern Jsonb *dc_forward(const char *address, const char *role,
						 const char *mall_id, const char *user_id,
						 const DcCommand *cmd, bool tell, TimestampTz deadline,
						 bool *moved);
extern Jsonb *dc_moved_reply(void);

#endif							/* DC_FORWARD_H */
