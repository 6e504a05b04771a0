/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  Tenant isolation: roles an administrator restricted to some malls
 *	  (dc_restrict_role), checked wherever a command or a read of an entity
 *	  enters the cluster.
 *
 * durable_cluster.tenant_grants lists, for each restricted role, the malls
 * it may reach and the commands it may send there (NULL: any).  A role
 * without rows is not restricted; a superuser never is.  The check runs in
 * the backend of the caller, before anything is queued, for
 * dc_send_command, dc_tell (the "command" checked is the command's name),
 * dc_get_state ("get_state"), both sides of dc_transfer ("deduct_balance"
 * on the source, "add_balance" on the target), and again on the server a
 * command is forwarded to, for the role that sent it.  A retry with a
 * command_id is a command like any other, so a logged reply is only
 * returned to a role that may send that command to that mall.
 *
 * Roles are known by name: every server of a cluster has its own roles,
 * and the table is the store's.  On the store's server it is read
 * directly (two primary-key lookups); elsewhere the store is asked.
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
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "remote.h"
#include "settings.h"
#include "state_table.h"
#include "tenant.h"

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

void
dc_tenant_check(const char *role, const char *mall_id, const char *command)
{
	bool		allowed;

	if (role == NULL)
	{
		if (superuser())
			return;
		role = GetUserNameFromId(GetUserId(), false);
	}
	if (dc_store_is_here())
		allowed = allowed_here(role, mall_id, command);
	else
	{
		char	   *answer = dc_store_value("SELECT durable_cluster.tenant_allows($1, $2, $3)",
											3, (const char *[]) {role, mall_id, command});

		allowed = answer != NULL && strcmp(answer, "t") == 0;
	}
	if (!allowed)
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("role \"%s\" may not send \"%s\" to the entities of mall \"%s\"",
					   role, command, mall_id),
				errhint("An administrator lets a role reach malls with dc_restrict_role(); dc_tenant_grants lists what each restricted role may do."));
}
