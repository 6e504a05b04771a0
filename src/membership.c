/*-------------------------------------------------------------------------
 *
 * membership.c
 *	  Changing the cluster's membership from SQL: dc_add_node starts a node
 *	  worker now, dc_remove_node makes one leave for good; and the
 *	  commit-time wake-up that lets nodes react to any change at once.
 *
 * Both functions only act on shared memory and on the postmaster's worker
 * list; the nodes themselves record what happens in the members and shards
 * tables, in their own transactions, so the caller's transaction holds no
 * lock the nodes would wait for.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "entity.h"
#include "node.h"
#include "settings.h"
#include "shared_memory.h"

PG_FUNCTION_INFO_V1(dc_add_node);
PG_FUNCTION_INFO_V1(dc_remove_node);
PG_FUNCTION_INFO_V1(dc_wake_nodes_at_commit);

/* how long dc_remove_node waits for the node to finish leaving */
#define REMOVE_TIMEOUT_MS	60000

static char *
checked_name(text *t, const char *what)
{
	char	   *name = text_to_cstring(t);
	int			len = strlen(name);

	if (len == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must not be empty", what));
	if (len >= NAMEDATALEN)
		ereport(ERROR,
				errcode(ERRCODE_NAME_TOO_LONG),
				errmsg("%s \"%s\" is longer than %d bytes", what, name, NAMEDATALEN - 1));
	dc_check_text(name, len, what);
	return name;
}

/* The roles of a new node as a text[] literal, "dc-default" first. */
static char *
roles_literal(ArrayType *roles)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Datum	   *all;
	int			nall = 0;
	char	   *literal;

	deconstruct_array(roles, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	all = palloc(sizeof(Datum) * (n + 1));
	all[nall++] = CStringGetTextDatum("dc-default");
	for (int i = 0; i < n; i++)
	{
		char	   *role;

		if (nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("roles must not contain NULL"));
		role = checked_name(DatumGetTextPP(elems[i]), "a role");
		if (strcmp(role, "dc-default") != 0)
			all[nall++] = elems[i];
	}
	/* array_out keeps state in flinfo: call it through fmgr, not directly */
	literal = OidOutputFunctionCall(F_ARRAY_OUT,
									PointerGetDatum(construct_array(all, nall, TEXTOID, -1,
																	false, TYPALIGN_INT)));
	if (strlen(literal) >= DC_ROLES_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("roles take more than %d bytes", DC_ROLES_BYTES - 1));
	return literal;
}

/*
 * dc_add_node(name text DEFAULT NULL, roles text[] DEFAULT '{}') RETURNS text
 *
 * Starts a node worker in a free slot.  It joins at once and the reconcile
 * that follows its join gives it its share of shards.
 */
Datum
dc_add_node(PG_FUNCTION_ARGS)
{
	char	   *name = NULL;
	char	   *roles;
	int			slot;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	char		started[NAMEDATALEN];

	dc_check_usable();
	if (!PG_ARGISNULL(0))
		name = checked_name(PG_GETARG_TEXT_PP(0), "node name");
	roles = roles_literal(PG_ARGISNULL(1) ? construct_empty_array(TEXTOID)
						  : PG_GETARG_ARRAYTYPE_P(1));

	slot = dc_node_slot_claim(name, roles);
	if (slot == -2)
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("a node named \"%s\" is already running", name));
	if (slot < 0)
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("all %d node slots are in use", dc_max_nodes),
				errhint("Raise durable_cluster.max_nodes (needs a restart) or remove a node."));

	dc_node_worker(&worker, slot);
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		dc_node_slot_release(slot);
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("could not start a node worker: no background worker slot is free"),
				errhint("Raise max_worker_processes (needs a restart)."));
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
	{
		dc_node_slot_release(slot);
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				errmsg("the node worker for slot %d did not start", slot + 1),
				errhint("See the server log."));
	}

	dc_node_slot_name(slot, started);
	PG_RETURN_TEXT_P(cstring_to_text(started));
}

/*
 * dc_remove_node(name text) RETURNS void
 *
 * Asks the node to leave and waits until it has: it stops taking commands,
 * hands its shards to the other nodes, sends what is still queued to them
 * and exits without being restarted.
 */
Datum
dc_remove_node(PG_FUNCTION_ARGS)
{
	char	   *name;
	int			slot;
	TimestampTz deadline;

	dc_check_usable();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("node name must not be NULL"));
	name = checked_name(PG_GETARG_TEXT_PP(0), "node name");

	slot = dc_node_request_leave(name);
	if (slot < 0)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("no node named \"%s\" is running on this server", name),
				errhint("SELECT name FROM dc.members WHERE status = 'up' lists the nodes."));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), REMOVE_TIMEOUT_MS);
	while (dc_node_find(name) == slot)
	{
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					errmsg("node \"%s\" did not finish leaving within %d s",
						   name, REMOVE_TIMEOUT_MS / 1000),
					errdetail("It goes on leaving; watch dc.members."));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	PG_RETURN_VOID();
}

/*
 * durable_cluster.wake_nodes_at_commit(): when the calling transaction
 * commits, every node runs its tick (heartbeat, reconcile, shard map) at
 * once instead of at its next heartbeat.  Called by announce().
 */
Datum
dc_wake_nodes_at_commit(PG_FUNCTION_ARGS)
{
	if (dc_shared != NULL)
		dc_wake_at_commit(DC_WAKE_NODES);
	PG_RETURN_VOID();
}
