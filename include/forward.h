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
#include "tenant.h"

/*
 * The formats of durable_cluster.forward()'s arguments, which differ in
 * role_name: 1, the name of the one role that sent the command (every
 * release reads it); 2, the roles it acts as, a text[] literal (tenant.h).
 * A server refuses a command forwarded in a format it does not read.
 */
#define DC_FORWARD_FORMAT_ONE_ROLE	1
#define DC_FORWARD_FORMAT_ROLES		2

extern Jsonb *dc_forward(const char *address, const DcRoles *roles,
						 const char *mall_id, const char *user_id,
						 const DcCommand *cmd, bool tell, TimestampTz deadline,
						 bool *moved);
extern Jsonb *dc_moved_reply(void);

#endif							/* DC_FORWARD_H */
