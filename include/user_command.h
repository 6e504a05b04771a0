/*-------------------------------------------------------------------------
 *
 * user_command.h
 *	  Commands registered with dc_register_command(): their registry and
 *	  how their handlers run in the store.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_USER_COMMAND_H
#define DC_USER_COMMAND_H

/* Is name registered?  Read without checking the caller's privileges. */
extern bool dc_user_command_exists(const char *name);

/* a security-restricted operation as role, with search_path pg_catalog, pg_temp */
extern int	dc_enter_as(Oid role, Oid *save_user, int *save_sec);
extern void dc_leave_as(int nestlevel, Oid save_user, int save_sec);

/* true while this backend runs a handler (commands may not nest) */
extern bool dc_in_command_handler;

#endif							/* DC_USER_COMMAND_H */
