/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  Tenant isolation: roles an administrator restricted to some malls
 *	  (dc_restrict_role), checked wherever a command or a read of an entity
 *	  enters the cluster.
 *
 * durable_cluster.tenant_grants lists, for each restricted role, the malls
 * it may reach and the commands it may send there (NULL: any).  A role
 * without rows is not restricted; a superuser never is.
 *
 * A request acts as every role its session is: the login (session_user),
 * the role it took with SET ROLE, and the current user (the owner of a
 * SECURITY DEFINER function it runs in).  Each of them must be allowed, so
 * a restricted login stays restricted whatever role it becomes, and a role
 * a superuser or a pooler SET ROLEs to is restricted too.  The check runs
 * in the backend of the caller, before anything is queued, for
 * dc_send_command, dc_tell (the "command" checked is the command's name),
 * dc_get_state ("get_state"), both sides of dc_transfer ("deduct_balance"
 * on the source, "add_balance" on the target); again by the saga worker for
 * a command sent at commit, for the roles recorded with it; and on the
 * server a command is forwarded to, for the roles that sent it.  A retry
 * with a command_id is a command like any other, so a logged reply is only
 * returned to roles that may send that command to that mall.
 *
 * Roles are known by name: every server of a cluster has its own roles,
 * and the table is the store's.  On the store's server it is read
 * directly (two primary-key lookups per role); elsewhere the store is
 * asked, once for all the roles.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "entity.h"
#include "remote.h"
#include "settings.h"
#include "state_table.h"
#include "tenant.h"
#include "user_command.h"

PG_FUNCTION_INFO_V1(dc_check_tenant_grant);

/* how many malls and commands one restricted role may be given */
#define MAX_GRANTED_MALLS		10000
#define MAX_GRANTED_COMMANDS	100

/* Is command in the text[] commands? */
static bool
command_listed(Datum commands, const char *command)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(DatumGetArrayTypeP(commands), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i] && strcmp(TextDatumGetCString(elems[i]), command) == 0)
			return true;
	return false;
}

/* The store's answer, read here: see durable_cluster.tenant_allows(). */
static bool
allowed_here(const char *role, const char *mall_id, const char *command)
{
	Oid			pkey;
	Relation	rel = dc_open_tenant_grants(AccessShareLock, &pkey);
	Relation	index = index_open(pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	Datum		keys[2] = {CStringGetTextDatum(role), CStringGetTextDatum(mall_id)};
	bool		allowed;

	if (!dc_find_by_key(rel, index, keys, 1, slot))
		allowed = true;			/* not restricted */
	else if (!dc_find_by_key(rel, index, keys, 2, slot))
		allowed = false;		/* restricted, not to this mall */
	else
	{
		bool		isnull;
		Datum		commands = slot_getattr(slot, TENANT_COMMANDS, &isnull);

		allowed = isnull || command_listed(commands, command);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return allowed;
}

/* Add a role by name, and its oid on this server where known. */
static void
add_role(DcRoles *roles, const char *name, Oid oid)
{
	for (int i = 0; i < roles->n; i++)
		if (strcmp(roles->names[i], name) == 0)
			return;
	Assert(roles->n < DC_MAX_ACTING_ROLES);
	strlcpy(roles->names[roles->n], name, NAMEDATALEN);
	roles->oids[roles->n++] = oid;
}

void
dc_session_roles(DcRoles *roles)
{
	Oid			oids[DC_MAX_ACTING_ROLES] = {GetSessionUserId(), GetOuterUserId(), GetUserId()};

	roles->n = 0;
	for (int i = 0; i < DC_MAX_ACTING_ROLES; i++)
		if (i == 0 || (oids[i] != oids[0] && oids[i] != oids[i - 1]))
			add_role(roles, GetUserNameFromId(oids[i], false), oids[i]);
}

void
dc_one_role(const char *name, DcRoles *roles)
{
	roles->n = 0;
	add_role(roles, name, InvalidOid);
}

char *
dc_roles_text(const DcRoles *roles)
{
	Datum		elems[DC_MAX_ACTING_ROLES];

	for (int i = 0; i < roles->n; i++)
		elems[i] = CStringGetTextDatum(roles->names[i]);
	return OidOutputFunctionCall(F_ARRAY_OUT,
								 PointerGetDatum(construct_array(elems, roles->n, TEXTOID, -1,
																 false, TYPALIGN_INT)));
}

void
dc_roles_parse(const char *literal, DcRoles *roles)
{
	ArrayType  *array;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	array = DatumGetArrayTypeP(OidInputFunctionCall(F_ARRAY_IN, (char *) literal, TEXTOID, -1));
	if (ARR_NDIM(array) > 1)
		n = -1;
	else
		deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n < 1 || n > DC_MAX_ACTING_ROLES)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a request acts as 1 to %d roles, not %d", DC_MAX_ACTING_ROLES, Max(n, 0)));
	roles->n = 0;
	for (int i = 0; i < n; i++)
	{
		char	   *name = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

		if (name == NULL || name[0] == '\0' || strlen(name) >= NAMEDATALEN)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("a role name of a request must be 1 to %d bytes long", NAMEDATALEN - 1));
		add_role(roles, name, InvalidOid);
	}
}

/*
 * The first of roles that may not send command to the entities of mall_id,
 * or NULL.  A superuser of this server is never restricted.
 */
static const char *
first_refused(const DcRoles *roles, const char *mall_id, const char *command)
{
	DcRoles		restricted = {0};
	char	   *refused;

	for (int i = 0; i < roles->n; i++)
	{
		Oid			oid = OidIsValid(roles->oids[i]) ? roles->oids[i]
			: get_role_oid(roles->names[i], true);

		if (OidIsValid(oid) && superuser_arg(oid))
			continue;
		if (!dc_store_is_here())
			add_role(&restricted, roles->names[i], oid);
		else if (!allowed_here(roles->names[i], mall_id, command))
			return roles->names[i];
	}
	if (restricted.n == 0)
		return NULL;
	/* the store is another server: one question for every role */
	refused = dc_store_value("SELECT r FROM pg_catalog.unnest($1::pg_catalog.text[]) r"
							 " WHERE NOT durable_cluster.tenant_allows(r, $2, $3) LIMIT 1",
							 3, (const char *[]) {dc_roles_text(&restricted), mall_id, command});
	return refused;
}

void
dc_tenant_check(const DcRoles *roles, const char *mall_id, const char *command)
{
	DcRoles		session;
	const char *refused;

	if (roles == NULL)
	{
		dc_session_roles(&session);
		roles = &session;
	}
	if ((refused = first_refused(roles, mall_id, command)) != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				roles->n == 1
				? errmsg("role \"%s\" may not send \"%s\" to the entities of mall \"%s\"",
						 refused, command, mall_id)
				: errmsg("role \"%s\", which this request acts as, may not send \"%s\" to the entities of mall \"%s\"",
						 refused, command, mall_id),
				roles->n == 1 ? 0
				: errdetail("A request acts as the session's login role, the role it set with SET ROLE and the current user; each must be allowed."),
				errhint("An administrator lets a role reach malls with dc.restrict_role(); dc.tenant_grants lists what each restricted role may do."));
}

/* The elements of a text[] argument, which the caller checked for NULLs. */
static int
text_elements(FunctionCallInfo fcinfo, int argno, Datum **elems)
{
	bool	   *nulls;
	int			n;

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, -1, false, TYPALIGN_INT,
					  elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("malls and commands must not contain NULL"));
	return n;
}

/*
 * durable_cluster.check_tenant_grant(malls text[], commands text[]):
 * what dc_restrict_role() is given, checked as what it grants: every mall
 * an id as a command would name it (not empty, at most 255 bytes, no
 * control, format or invisible characters), every command one that exists
 * (built in, or registered), and no more of either than a grant holds.
 */
Datum
dc_check_tenant_grant(PG_FUNCTION_ARGS)
{
	Datum	   *elems;
	int			n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("malls must not be NULL"));
	n = text_elements(fcinfo, 0, &elems);
	if (n == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a restricted role needs at least one mall"),
				errhint("To keep a role from every mall, revoke dc_client from it."));
	if (n > MAX_GRANTED_MALLS)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("%d malls given; a role may be restricted to at most %d", n, MAX_GRANTED_MALLS));
	for (int i = 0; i < n; i++)
	{
		text	   *mall = DatumGetTextPP(elems[i]);

		(void) dc_id_check(VARDATA_ANY(mall), VARSIZE_ANY_EXHDR(mall), "a mall");
	}
	if (PG_ARGISNULL(1))
		PG_RETURN_VOID();
	n = text_elements(fcinfo, 1, &elems);
	if (n > MAX_GRANTED_COMMANDS)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("%d commands given; a role may be allowed at most %d", n, MAX_GRANTED_COMMANDS));
	for (int i = 0; i < n; i++)
		dc_check_command_exists(TextDatumGetCString(elems[i]));
	PG_RETURN_VOID();
}
