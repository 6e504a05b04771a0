/*-------------------------------------------------------------------------
 *
 * tenant.h
 *	  Roles restricted to some malls (tenant.c), and the roles a request
 *	  acts as, whose restrictions all apply to it.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_TENANT_H
#define DC_TENANT_H

/* a session acts as its login, the role it SET ROLE to, and the current user */
#define DC_MAX_ACTING_ROLES		3

/*
 * The roles a request acts as, by name (the servers of a cluster each have
 * their own roles): distinct, the login first.
 */
typedef struct DcRoles
{
	int			n;
	char		names[DC_MAX_ACTING_ROLES][NAMEDATALEN];
	Oid			oids[DC_MAX_ACTING_ROLES];	/* this server's, where known */
} DcRoles;

/* This session's: session_user, the role of SET ROLE, current_user. */
extern void dc_session_roles(DcRoles *roles);

/* One role by name: how the cluster's own sessions act. */
extern void dc_one_role(const char *name, DcRoles *roles);

/* As a text[] literal, and back (22023 for anything but 1 to 3 names). */
extern char *dc_roles_text(const DcRoles *roles);
extern void dc_roles_parse(const char *literal, DcRoles *roles);

/*
 * Raise 42501 unless every one of roles (NULL: this session's) may send
 * command to the entities of mall_id.
 */
extern void dc_tenant_check(const DcRoles *roles, const char *mall_id, const char *command);

#endif							/* DC_TENANT_H */
