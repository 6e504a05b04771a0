/*-------------------------------------------------------------------------
 *
 * at_commit.c
 *	  Commands that are part of the caller's transaction:
 *	  dc_send_command_at_commit() records a command in the caller's
 *	  transaction, and it is applied once, after that transaction commits,
 *	  and never if it rolls back.  dc_command_outcome() tells what became
 *	  of it.
 *
 * A node cannot take part in its caller's transaction (it commits on its
 * own, in the store), so the command goes through a table of this server,
 * durable_cluster.pending_commands, written in the caller's transaction:
 * a rollback removes it, a commit makes it durable with the caller's own
 * writes, crash or not.  The saga worker of this server (saga.c) sends
 * the pending commands on as dc_send_command would, in submission order,
 * as the role that submitted them, and writes down their replies or
 * errors.
 *
 * Exactly once: every such command has a command_id (given, or made of
 * the row's id with a prefix no client may use), so a command the worker
 * sends again -- after a crash between its reply and the row's update, or
 * after a 40003 -- is answered from the command log instead of applied
 * twice.  Order: the worker takes pending rows by id and, for an entity
 * whose command could not be sent yet (no owner, an unknown outcome), it
 * sends none of that entity's later ones in the same round.
 *
 * A commit wakes the worker at once (a transaction callback sets its
 * latch); otherwise it looks every heartbeat_interval.  Rows that are
 * done are kept for durable_cluster.at_commit_retention, then removed by
 * the worker.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ask.h"
#include "at_commit.h"
#include "entity.h"
#include "jsonb_build.h"
#include "settings.h"
#include "shared_memory.h"
#include "state_table.h"
#include "tenant.h"
#include "user_command.h"

PG_FUNCTION_INFO_V1(dc_send_command_at_commit);
PG_FUNCTION_INFO_V1(dc_command_outcome);

/* pending commands the worker sends on per round */
#define PENDING_PER_ROUND	200

/*
 * Run an SPI statement as the owner of durable_cluster.pending_commands,
 * which clients can neither read nor write: the caller's checks are done
 * by then.  With the fixed search_path, not the caller's, whose functions
 * and operators would otherwise run as the owner.  Returns the first
 * column of the first row it returned, as text in the caller's memory
 * context, or NULL.
 */
static char *
as_table_owner(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			pkey;
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
	Relation	rel = dc_open_pending_commands(AccessShareLock, &pkey);
	Oid			owner = rel->rd_rel->relowner;
	char	   *result = NULL;

	table_close(rel, NoLock);

	/* (an error ends the caller's transaction, which undoes both) */
	nestlevel = dc_enter_as(owner, &save_user, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0) < 0)
		elog(ERROR, "could not run: %s", sql);
	if (SPI_processed > 0 && SPI_tuptable != NULL)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (v != NULL)
			result = MemoryContextStrdup(cxt, v);
	}
	SPI_finish();
	dc_leave_as(nestlevel, save_user, save_sec);
	return result;
}

/*
 * dc_send_command_at_commit(mall_id, user_id, command, payload)
 * RETURNS text: the command's id.
 *
 * Checked now as dc_send_command checks it (and again by the worker, as
 * the role that sent it, when it goes to its node); recorded in the
 * caller's transaction.
 */
Datum
dc_send_command_at_commit(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	DcCommand  *cmd = palloc(sizeof(DcCommand));
	Jsonb	   *payload;
	char	   *command_id;
	DcRoles		roles;

	dc_check_usable();
	/* a handler runs inside a node's batch: it only returns its new state */
	if (dc_in_command_handler)
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("a command handler cannot send commands at commit"),
				errhint("A handler only returns its entity's new state."));
	mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	user_id = dc_id_argument(fcinfo, 1, "user_id");
	if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("%s must not be NULL", PG_ARGISNULL(2) ? "command" : "payload"));
	payload = PG_GETARG_JSONB_P(3);
	dc_parse_client_command(text_to_cstring(PG_GETARG_TEXT_PP(2)), payload, cmd);
	dc_session_roles(&roles);
	dc_tenant_check(&roles, mall_id, cmd->name);

	/*
	 * The given command_id, or "commit-" and the row's id; the roles it
	 * acts as, the login first, checked again when it is sent.
	 */
	command_id = as_table_owner(
		"INSERT INTO durable_cluster.pending_commands"
		"       (id, mall_id, user_id, command, payload, command_id, role_name, roles)"
		" SELECT n, $1, $2, $3, $4, coalesce($5, '" DC_AT_COMMIT_ID_PREFIX "' || n), $6, $7::text[]"
		"   FROM nextval('durable_cluster.pending_commands_id_seq') AS n"
		" ON CONFLICT (mall_id, user_id, command_id) DO NOTHING"
		" RETURNING command_id",
		7,
		(Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID},
		(Datum[]) {
			CStringGetTextDatum(mall_id), CStringGetTextDatum(user_id),
			CStringGetTextDatum(cmd->name), JsonbPGetDatum(payload),
			cmd->command_id[0] ? CStringGetTextDatum(cmd->command_id) : (Datum) 0,
			CStringGetTextDatum(roles.names[0]),
			CStringGetTextDatum(dc_roles_text(&roles))
		},
		cmd->command_id[0] ? "       " : "    n  ");
	if (command_id == NULL)
		ereport(ERROR,
				errcode(ERRCODE_UNIQUE_VIOLATION),
				errmsg("command_id \"%s\" was already sent at commit for (%s, %s)",
					   cmd->command_id, mall_id, user_id),
				errhint("Give every command its own command_id; dc_command_outcome() tells what became of the first."));
	dc_wake_at_commit(DC_WAKE_SAGA_WORKER);
	PG_RETURN_TEXT_P(cstring_to_text(command_id));
}

/*
 * dc_command_outcome(mall_id, user_id, command_id) RETURNS jsonb:
 * {"status": "pending" | "done" | "failed", "reply", "sqlstate",
 *  "message", "submitted_at", "done_at"} of a command sent with
 * dc_send_command_at_commit on this server, NULL if there is none (never
 * sent, rolled back, or removed after at_commit_retention).
 */
Datum
dc_command_outcome(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	char	   *command_id;
	char	   *doc;

	dc_check_usable();
	mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	user_id = dc_id_argument(fcinfo, 1, "user_id");
	command_id = dc_id_argument(fcinfo, 2, "command_id");
	dc_tenant_check(NULL, mall_id, "get_state");
	doc = as_table_owner(
		"SELECT jsonb_build_object('status', status, 'reply', reply, 'sqlstate', sqlstate,"
		"                          'message', message, 'submitted_at', submitted_at,"
		"                          'done_at', done_at)"
		"  FROM durable_cluster.pending_commands"
		" WHERE mall_id = $1 AND user_id = $2 AND command_id = $3",
		3, (Oid[]) {TEXTOID, TEXTOID, TEXTOID},
		(Datum[]) {CStringGetTextDatum(mall_id), CStringGetTextDatum(user_id),
		CStringGetTextDatum(command_id)}, NULL);
	if (doc == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(doc)));
}

/* ---- the worker's side (run by the saga worker, as dc_cluster) ---- */

typedef struct PendingCommand
{
	int64		id;
	char	   *mall_id;
	char	   *user_id;
	char	   *command;
	Jsonb	   *payload;
	char	   *command_id;
	DcRoles		roles;			/* whom it acts as, the login first */
} PendingCommand;

/*
 * Errors after which the command may still go through later: nobody owns
 * its shard yet, the store or a server cannot be reached, the outcome is
 * unknown (sent again, the command log answers), a session on the way was
 * shut down (57P).  Anything else is the command's own failure, 57014 too:
 * a handler cancelled at command_timeout would be again.
 */
static bool
may_go_through_later(int sqlstate)
{
	const char *code = unpack_sql_state(sqlstate);

	return strncmp(code, "08", 2) == 0 || strncmp(code, "40", 2) == 0 ||
		strncmp(code, "53", 2) == 0 || strncmp(code, "55", 2) == 0 ||
		strncmp(code, "57P", 3) == 0;
}

/* Does an earlier command of p's entity wait, one of held? */
static bool
held_back(List *held, const PendingCommand *p)
{
	ListCell   *lc;

	foreach(lc, held)
	{
		const PendingCommand *h = lfirst(lc);

		if (strcmp(h->mall_id, p->mall_id) == 0 && strcmp(h->user_id, p->user_id) == 0)
			return true;
	}
	return false;
}

/*
 * Send one pending command as its sender, in a transaction of the
 * worker's own, and write down its reply or its error.  False if it is
 * to be tried again later.
 */
static bool
send_pending(PendingCommand *p, MemoryContext cxt)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Jsonb	   *reply = NULL;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		DcCommand  *cmd = palloc(sizeof(DcCommand));
		DcAskOptions options = {dc_ask_timeout_ms, false, true, &p->roles};

		for (int i = 0; i < p->roles.n; i++)
			if (!OidIsValid(get_role_oid(p->roles.names[i], true)))
				ereport(ERROR,
						errcode(ERRCODE_UNDEFINED_OBJECT),
						errmsg("role \"%s\", which sent the command, no longer exists",
							   p->roles.names[i]));
		dc_parse_client_command(p->command,
						 DatumGetJsonbP(DirectFunctionCall2(jsonb_delete,
															JsonbPGetDatum(p->payload),
															CStringGetTextDatum("command_id"))),
						 cmd);
		strlcpy(cmd->command_id, p->command_id, sizeof(cmd->command_id));
		dc_tenant_check(&p->roles, p->mall_id, cmd->name);
		reply = dc_ask(p->mall_id, p->user_id, cmd, &options);
		MemoryContextSwitchTo(cxt);
		reply = (Jsonb *) datumCopy(JsonbPGetDatum(reply), false, -1);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	CurrentResourceOwner = owner;

	if (edata != NULL && may_go_through_later(edata->sqlerrcode))
	{
		ereport(DEBUG1,
				errmsg("durable_cluster: command %s of (%s, %s) sent at commit could not go yet: %s",
					   p->command_id, p->mall_id, p->user_id, edata->message));
		return false;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(
			"UPDATE durable_cluster.pending_commands"
			"   SET status = $2, reply = $3, sqlstate = $4, message = $5, done_at = now()"
			" WHERE id = $1",
			5, (Oid[]) {INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID},
			(Datum[]) {
				Int64GetDatum(p->id),
				CStringGetTextDatum(edata ? "failed" : "done"),
				reply ? JsonbPGetDatum(reply) : (Datum) 0,
				edata ? CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode)) : (Datum) 0,
				edata ? CStringGetTextDatum(edata->message) : (Datum) 0
			},
			edata ? "  n  " : "   nn", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the outcome of a command sent at commit");
	SPI_finish();
	return true;
}

/* The oldest pending commands, at most PENDING_PER_ROUND, into cxt. */
static int
pending_commands(MemoryContext cxt, PendingCommand **out)
{
	int			n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT id, mall_id, user_id, command, payload, command_id,"
					"       coalesce(roles, ARRAY[role_name])"
					"  FROM durable_cluster.pending_commands"
					" WHERE status = 'pending'"
					" ORDER BY id LIMIT " CppAsString2(PENDING_PER_ROUND), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read durable_cluster.pending_commands");
	n = SPI_processed;
	*out = MemoryContextAlloc(cxt, sizeof(PendingCommand) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PendingCommand *p = &(*out)[i];
		bool		isnull;
		MemoryContext spi = MemoryContextSwitchTo(cxt);

		p->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		p->mall_id = SPI_getvalue(tup, desc, 2);
		p->user_id = SPI_getvalue(tup, desc, 3);
		p->command = SPI_getvalue(tup, desc, 4);
		p->payload = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
		p->command_id = SPI_getvalue(tup, desc, 6);
		dc_roles_parse(SPI_getvalue(tup, desc, 7), &p->roles);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return n;
}

/*
 * One round of the worker: remove what is done and older than
 * at_commit_retention (by the partial index on done_at: cheap when there
 * is nothing to remove), then send on the pending commands in the order
 * they were recorded, each in a transaction of its own; an entity whose
 * command must wait holds back its later ones.
 */
void
dc_at_commit_round(MemoryContext cxt)
{
	PendingCommand *pending;
	int			n = 0;
	List	   *held = NIL;

	MemoryContextReset(cxt);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("durable_cluster", true)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(
				"DELETE FROM durable_cluster.pending_commands"
				" WHERE id IN (SELECT id FROM durable_cluster.pending_commands"
				"               WHERE status <> 'pending'"
				"                 AND done_at < now() - $1 * interval '1 millisecond'"
				"               LIMIT 1000)",
				1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(dc_at_commit_retention_ms)},
				NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove old commands sent at commit");
		SPI_finish();
		n = pending_commands(cxt, &pending);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	for (int i = 0; i < n; i++)
	{
		PendingCommand *p = &pending[i];
		bool		sent;

		if (held_back(held, p))
			continue;
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		sent = send_pending(p, cxt);
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
		if (!sent)
			held = lappend(held, p);
	}
}
