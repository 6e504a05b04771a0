/*-------------------------------------------------------------------------
 *
 * user_command.h
 *	  Commands registered with dc_register_command(): their registry and
 *	  how their handlers run in the store.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_USER_COMMAND_H
#define DC_USER_COMMAND_H

#include "utils/jsonb.h"

#include "entity.h"

/* 22023 unless name is built in or registered with dc.register_command(). */
extern void dc_check_command_exists(const char *name);

/* A built-in or registered command, validated; 22023 for an unknown name. */
extern void dc_parse_client_command(const char *name, Jsonb *payload, DcCommand *cmd);

/* a security-restricted operation as role, with search_path pg_catalog, pg_temp */
extern int	dc_enter_as(Oid role, Oid *save_user, int *save_sec);
extern void dc_leave_as(int nestlevel, Oid save_user, int save_sec);

/* true while this backend runs a handler (commands may not nest) */
extern bool dc_in_command_handler;

#endif							/* DC_USER_COMMAND_H */
