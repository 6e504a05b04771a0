/*-------------------------------------------------------------------------
 *
 * at_commit.c
 *	  Commands that are part of the caller's transaction:
 *	  dc.send_command_at_commit() records a command in the caller's
 *	  transaction, and it is applied once, after that transaction commits,
 *	  and never if it rolls back.  dc.command_outcome() tells what became
 *	  of it.
 *
 * A node cannot take part in its caller's transaction (it commits on its
 * own, in the store), so the command goes through a table of this server,
 * durable_cluster.pending_commands, written in the caller's transaction:
 * a rollback removes it, a commit makes it durable with the caller's own
 * writes, crash or not.  The saga worker of this server (saga.c) sends
 * the pending commands on as dc.send_command would, for the roles that
 * submitted them, and writes down their replies or errors.
 *
 * Exactly once: every such command has a command_id (given, or made of
 * the row's id with a prefix no client may use), so a command the worker
 * sends again -- after a crash between its reply and the row's update, or
 * after a 40003 -- is answered from the command log instead of applied
 * twice.
 *
 * Rounds.  No tenant can keep another's commands waiting: a round takes
 * the login roles with commands waiting, in turn (after the one it served
 * last, so that past DC_ASK_WINDOW roles every one gets its turn), and
 * from each a share of its oldest commands, then sends them all at once,
 * up to DC_ASK_WINDOW in flight (ask.c).  A command goes only when no
 * older one of its entity waits, whatever role sent that: an entity's
 * commands apply in the order they were recorded, one per round, and one
 * that could not go yet (no owner, an unknown outcome) holds back the
 * later ones.  A round holds the commands' metadata and at most
 * DC_ASK_WINDOW payloads, each at most DC_MAX_PAYLOAD_BYTES (a row with a
 * larger one, written by hand or by 0.1 or 0.2, fails without being read): its
 * memory is bounded whatever waits.  Anything wrong with one row (its
 * roles, its command, its tenant check) fails that command alone.  A
 * login role may have at most durable_cluster.max_pending_per_role
 * commands waiting: submitting more fails at once.
 *
 * A commit wakes the worker at once (a transaction callback sets its
 * latch); otherwise it looks every heartbeat_interval, and while work is
 * left it runs round after round.  Rows that are done are kept for
 * durable_cluster.at_commit_retention, then removed by the worker, in a
 * transaction of their own that no round's failure touches.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ask.h"
#include "at_commit.h"
#include "entity.h"
#include "jsonb_build.h"
#include "pg_compat.h"
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
 * No login may keep more than max_pending_per_role commands waiting on
 * this server.  They are counted at the first command of a transaction
 * (an index scan of at most the limit's length) and then followed by the
 * ones this transaction adds, so that a transaction sending many pays for
 * one count.  Others' commands committed meanwhile are not seen until the
 * next transaction: the limit holds per transaction, as closely as
 * concurrent transactions of one login let it.
 */
static void
check_waiting(const char *login)
{
	static LocalTransactionId counted_in = InvalidLocalTransactionId;
	static char counted_for[NAMEDATALEN];
	static int	waiting;

	if (counted_in != dc_local_transaction_id() || strcmp(counted_for, login) != 0)
	{
		waiting = pg_strtoint32(as_table_owner(
			"SELECT count(*) FROM (SELECT FROM durable_cluster.pending_commands"
			"                       WHERE status = 'pending' AND role_name = $1 LIMIT $2) w",
			2, (Oid[]) {TEXTOID, INT4OID},
			(Datum[]) {CStringGetTextDatum(login), Int32GetDatum(dc_max_pending_per_role)},
			NULL));
		counted_in = dc_local_transaction_id();
		strlcpy(counted_for, login, sizeof(counted_for));
	}
	if (waiting >= dc_max_pending_per_role)
		ereport(ERROR,
				errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				errmsg("role \"%s\" has %d commands sent at commit waiting on this server; the limit is %d",
					   login, waiting, dc_max_pending_per_role),
				errdetail("The limit is durable_cluster.max_pending_per_role, per login role."),
				errhint("Send fewer in one transaction, or wait until the saga worker sent them (dc.command_outcome)."));
	/* counted before the insert: one that fails counts too, on the safe side */
	waiting++;
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

	check_waiting(roles.names[0]);

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
				errhint("Give every command its own command_id; dc.command_outcome() tells what became of the first."));
	dc_wake_at_commit(DC_WAKE_SAGA_WORKER);
	PG_RETURN_TEXT_P(cstring_to_text(command_id));
}

/* What a command asks for (entity.c, as the command log keeps it), its command_id aside. */
static Jsonb *
request_of(const char *command, Jsonb *payload)
{
	DcCommand  *cmd = palloc(sizeof(DcCommand));

	dc_command_parse(command,
					 DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(payload),
														CStringGetTextDatum("command_id"))),
					 cmd);
	return dc_command_request(cmd);
}

/*
 * dc.command_outcome(mall_id, user_id, command_id, command, payload)
 * RETURNS jsonb: {"status": "pending" | "done" | "failed", "reply",
 * "sqlstate", "message", "submitted_at", "done_at"} of a command sent with
 * dc.send_command_at_commit on this server, NULL if there is none (never
 * sent, rolled back, or removed after at_commit_retention).
 *
 * Bound to its command as the command log binds a reply: the outcome is
 * given only if command_id was sent as this command with these arguments
 * (a "command_id" in payload is ignored); one sent as another is 23505,
 * so that a role that took the id first cannot make another command's
 * outcome read as its own.  The short name of 0.1, dc_command_outcome(
 * mall_id, user_id, command_id), asks for no command and is not bound.
 */
Datum
dc_command_outcome(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	char	   *command_id;
	char	   *found;
	Jsonb	   *row;
	JsonbValue *outcome;
	bool		bound = PG_NARGS() == 5;

	dc_check_usable();
	mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	user_id = dc_id_argument(fcinfo, 1, "user_id");
	command_id = dc_id_argument(fcinfo, 2, "command_id");
	if (bound && (PG_ARGISNULL(3) || PG_ARGISNULL(4)))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("%s must not be NULL", PG_ARGISNULL(3) ? "command" : "payload"));
	dc_tenant_check(NULL, mall_id, "get_state");
	found = as_table_owner(
		"SELECT jsonb_build_array(jsonb_build_object("
		"           'status', status, 'reply', reply, 'sqlstate', sqlstate,"
		"           'message', message, 'submitted_at', submitted_at, 'done_at', done_at),"
		"       command, payload)"
		"  FROM durable_cluster.pending_commands"
		" WHERE mall_id = $1 AND user_id = $2 AND command_id = $3",
		3, (Oid[]) {TEXTOID, TEXTOID, TEXTOID},
		(Datum[]) {CStringGetTextDatum(mall_id), CStringGetTextDatum(user_id),
		CStringGetTextDatum(command_id)}, NULL);
	if (found == NULL)
		PG_RETURN_NULL();
	row = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(found)));
	if (bound)
	{
		JsonbValue *command = getIthJsonbValueFromContainer(&row->root, 1);
		JsonbValue *payload = getIthJsonbValueFromContainer(&row->root, 2);
		char	   *sent_as = pnstrdup(command->val.string.val, command->val.string.len);

		if (!dc_jsonb_equal(request_of(sent_as, JsonbValueToJsonb(payload)),
							request_of(text_to_cstring(PG_GETARG_TEXT_PP(3)),
									   PG_GETARG_JSONB_P(4))))
			ereport(ERROR,
					errcode(ERRCODE_UNIQUE_VIOLATION),
					errmsg("command_id \"%s\" of (%s, %s) was sent at commit for another command, not for this %s",
						   command_id, mall_id, user_id,
						   dc_quote_for_message(text_to_cstring(PG_GETARG_TEXT_PP(3)))),
					errdetail("Its outcome is not this command's."),
					errhint("Ask with the command and arguments it was sent with."));
	}
	outcome = getIthJsonbValueFromContainer(&row->root, 0);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(outcome));
}

/* ---- the worker's side (run by the saga worker, as dc_cluster) ---- */

/* A command waiting to be sent, and what became of it in this round. */
typedef struct PendingCommand
{
	int64		id;
	char	   *mall_id;
	char	   *user_id;
	char	   *command;
	char	   *command_id;
	char	   *role_name;		/* the login: whose turn it is */
	char	   *roles_text;		/* every role it acts as, a text[] literal */
	Size		payload_bytes;
	bool		eligible;		/* no older command of its entity waits */

	/* prepared for sending */
	bool		ready;
	DcRoles		roles;
	DcCommand	cmd;

	/* the outcome: sent, failed for good, or neither (goes again later) */
	bool		settled;
	Jsonb	   *reply;
	int			sqlstate;
	char	   *message;
} PendingCommand;

/* the login role served last: the next round starts after it */
static char last_served[NAMEDATALEN];

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

static void
spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/*
 * The login roles with commands waiting, in name order from after
 * last_served round to it, at most DC_ASK_WINDOW: a loose scan of the
 * index on (role_name, id), two probes a role, however many commands
 * wait.
 */
static int
waiting_roles(MemoryContext cxt, char ***names)
{
	const char *from[2] = {last_served, ""};
	int			n = 0;

	*names = MemoryContextAlloc(cxt, sizeof(char *) * DC_ASK_WINDOW);
	for (int pass = 0; pass < 2 && n < DC_ASK_WINDOW; pass++)
	{
		if (pass == 1 && last_served[0] == '\0')
			break;
		if (SPI_execute_with_args(
				"WITH RECURSIVE r(name) AS ("
				"  (SELECT role_name FROM durable_cluster.pending_commands"
				"    WHERE status = 'pending' AND role_name > $1 ORDER BY role_name LIMIT 1)"
				"  UNION ALL"
				"  SELECT (SELECT p.role_name FROM durable_cluster.pending_commands p"
				"           WHERE p.status = 'pending' AND p.role_name > r.name"
				"           ORDER BY p.role_name LIMIT 1)"
				"    FROM r WHERE r.name IS NOT NULL)"
				" SELECT name FROM r WHERE name IS NOT NULL LIMIT $2",
				2, (Oid[]) {TEXTOID, INT4OID},
				(Datum[]) {CStringGetTextDatum(from[pass]), Int32GetDatum(DC_ASK_WINDOW - n)},
				NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read durable_cluster.pending_commands");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

			/* the second pass wraps around up to where the first began */
			if (pass == 1 && strcmp(name, last_served) > 0)
				break;
			(*names)[n++] = MemoryContextStrdup(cxt, name);
		}
	}
	return n;
}

/*
 * Up to share oldest waiting commands of each of roles, without their
 * payloads, and which of them may go: those no older command of their
 * entity waits behind.  Allocated in cxt.
 */
static int
candidates(MemoryContext cxt, char **roles, int nroles, int share, PendingCommand **out)
{
	Datum	   *names = palloc(sizeof(Datum) * nroles);
	int			n;

	for (int i = 0; i < nroles; i++)
		names[i] = CStringGetTextDatum(roles[i]);
	if (SPI_execute_with_args(
			"SELECT p.id, p.mall_id, p.user_id, p.command, p.command_id, p.role_name,"
			"       coalesce(p.roles, ARRAY[p.role_name])::text, p.payload,"
			"       NOT EXISTS (SELECT FROM durable_cluster.pending_commands o"
			"                    WHERE o.status = 'pending' AND o.mall_id = p.mall_id"
			"                      AND o.user_id = p.user_id AND o.id < p.id)"
			"  FROM unnest($1::text[]) r(name),"
			"       LATERAL (SELECT * FROM durable_cluster.pending_commands q"
			"                 WHERE q.status = 'pending' AND q.role_name = r.name"
			"                 ORDER BY q.id LIMIT $2) p",
			2, (Oid[]) {TEXTARRAYOID, INT4OID},
			(Datum[]) {PointerGetDatum(construct_array(names, nroles, TEXTOID, -1, false,
													   TYPALIGN_INT)),
			Int32GetDatum(share)},
			NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read durable_cluster.pending_commands");
	n = SPI_processed;
	*out = MemoryContextAllocZero(cxt, sizeof(PendingCommand) * Max(n, 1));
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
		p->command_id = SPI_getvalue(tup, desc, 5);
		p->role_name = SPI_getvalue(tup, desc, 6);
		p->roles_text = SPI_getvalue(tup, desc, 7);
		/* its size when read, without reading it: a stored one may be compressed */
		p->payload_bytes = toast_raw_datum_size(SPI_getbinval(tup, desc, 8, &isnull));
		p->eligible = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		MemoryContextSwitchTo(spi);
	}
	return n;
}

/*
 * Pick what this round sends: each role's eligible commands, taken in
 * turn one per role (the roles in the order given), at most DC_ASK_WINDOW.
 * Returns how many, their indexes in *chosen.
 */
static int
take_turns(PendingCommand *cands, int ncands, char **roles, int nroles, int **chosen)
{
	int		   *next = palloc0(sizeof(int) * nroles);	/* per role: where to look */
	int			n = 0;
	bool		any = true;

	*chosen = palloc(sizeof(int) * DC_ASK_WINDOW);
	while (any && n < DC_ASK_WINDOW)
	{
		any = false;
		for (int r = 0; r < nroles && n < DC_ASK_WINDOW; r++)
		{
			for (; next[r] < ncands; next[r]++)
			{
				PendingCommand *p = &cands[next[r]];

				if (p->eligible && strcmp(p->role_name, roles[r]) == 0)
				{
					(*chosen)[n++] = next[r]++;
					strlcpy(last_served, roles[r], sizeof(last_served));
					any = true;
					break;
				}
			}
		}
	}
	return n;
}

/*
 * A chosen command made ready to send, in a subtransaction so that what
 * is wrong with it fails it alone: its payload (read now, if it is within
 * the bound), its roles, which must exist and may reach its mall, its
 * command.
 */
static void
prepare(PendingCommand *p, MemoryContext cxt)
{
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Jsonb	   *payload;

		if (p->payload_bytes > DC_MAX_PAYLOAD_BYTES)
			ereport(ERROR,
					errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					errmsg("the payload of the command is %zu bytes long; the limit is %d bytes",
						   p->payload_bytes, DC_MAX_PAYLOAD_BYTES));
		spi_connect();
		if (SPI_execute_with_args("SELECT payload FROM durable_cluster.pending_commands WHERE id = $1",
								  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(p->id)},
								  NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "pending command " INT64_FORMAT " is gone", p->id);
		{
			bool		isnull;
			MemoryContext spi = MemoryContextSwitchTo(cxt);

			payload = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 1, &isnull));
			MemoryContextSwitchTo(spi);
		}
		SPI_finish();
		dc_roles_parse(p->roles_text, &p->roles);
		for (int i = 0; i < p->roles.n; i++)
			if (!OidIsValid(get_role_oid(p->roles.names[i], true)))
				ereport(ERROR,
						errcode(ERRCODE_UNDEFINED_OBJECT),
						errmsg("role \"%s\", which sent the command, no longer exists",
							   p->roles.names[i]));
		dc_parse_client_command(p->command,
								DatumGetJsonbP(DirectFunctionCall2(jsonb_delete,
																   JsonbPGetDatum(payload),
																   CStringGetTextDatum("command_id"))),
								&p->cmd);
		strlcpy(p->cmd.command_id, p->command_id, sizeof(p->cmd.command_id));
		dc_tenant_check(&p->roles, p->mall_id, p->cmd.name);
		ReleaseCurrentSubTransaction();
		p->ready = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/* (the store, asked about the tenant, may be out of reach for now) */
		p->settled = !may_go_through_later(edata->sqlerrcode);
		p->sqlstate = edata->sqlerrcode;
		p->message = edata->message;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/*
 * Send the prepared commands at once, as dc.send_commands would, each for
 * its roles, and take their outcomes: a reply, an error for good, or one
 * after which it goes again in a later round.
 */
static void
send_all(PendingCommand *cands, const int *chosen, int n)
{
	DcAskOptions options = {dc_ask_timeout_ms, false, true, NULL};
	DcAsk	   *asks = palloc0(sizeof(DcAsk) * n);
	int		   *of = palloc(sizeof(int) * n);
	int			nasks = 0;

	for (int i = 0; i < n; i++)
	{
		PendingCommand *p = &cands[chosen[i]];

		if (!p->ready)
			continue;
		asks[nasks].mall_id = p->mall_id;
		asks[nasks].user_id = p->user_id;
		asks[nasks].cmd = &p->cmd;
		asks[nasks].roles = &p->roles;
		of[nasks++] = chosen[i];
	}
	if (nasks > 0)
		dc_ask_many(asks, nasks, &options);
	for (int i = 0; i < nasks; i++)
	{
		PendingCommand *p = &cands[of[i]];

		if (asks[i].sqlstate == 0)
		{
			p->settled = true;
			p->reply = asks[i].reply;
		}
		else if (!may_go_through_later(asks[i].sqlstate))
		{
			p->settled = true;
			p->sqlstate = asks[i].sqlstate;
			p->message = asks[i].message;
		}
		else
			ereport(DEBUG1,
					errmsg("durable_cluster: command %s of (%s, %s) sent at commit could not go yet: %s",
						   p->command_id, p->mall_id, p->user_id, asks[i].message));
	}
}

/* Write down what became of the settled ones, in one statement. */
static int
record_outcomes(PendingCommand *cands, const int *chosen, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *replies = palloc(sizeof(Datum) * n);
	bool	   *reply_nulls = palloc(sizeof(bool) * n);
	Datum	   *sqlstates = palloc(sizeof(Datum) * n);
	Datum	   *messages = palloc(sizeof(Datum) * n);
	bool	   *error_nulls = palloc(sizeof(bool) * n);
	int			dims[1];
	int			lbs[1] = {1};
	int			k = 0;

	for (int i = 0; i < n; i++)
	{
		PendingCommand *p = &cands[chosen[i]];

		if (!p->settled)
			continue;
		ids[k] = Int64GetDatum(p->id);
		reply_nulls[k] = (p->reply == NULL);
		replies[k] = p->reply ? JsonbPGetDatum(p->reply) : (Datum) 0;
		error_nulls[k] = (p->reply != NULL);
		sqlstates[k] = p->reply ? (Datum) 0 : CStringGetTextDatum(unpack_sql_state(p->sqlstate));
		messages[k] = p->reply ? (Datum) 0 : CStringGetTextDatum(p->message);
		k++;
	}
	if (k == 0)
		return 0;
	dims[0] = k;
	spi_connect();
	if (SPI_execute_with_args(
			"UPDATE durable_cluster.pending_commands p"
			"   SET status = CASE WHEN o.reply IS NULL THEN 'failed' ELSE 'done' END,"
			"       reply = o.reply, sqlstate = o.sqlstate, message = o.message, done_at = now()"
			"  FROM unnest($1::bigint[], $2::jsonb[], $3::text[], $4::text[])"
			"       AS o(id, reply, sqlstate, message)"
			" WHERE p.id = o.id AND p.status = 'pending'",
			4, (Oid[]) {INT8ARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID},
			(Datum[]) {
				PointerGetDatum(construct_array(ids, k, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
				PointerGetDatum(construct_md_array(replies, reply_nulls, 1, dims, lbs, JSONBOID, -1,
												   false, TYPALIGN_INT)),
				PointerGetDatum(construct_md_array(sqlstates, error_nulls, 1, dims, lbs, TEXTOID, -1,
												   false, TYPALIGN_INT)),
				PointerGetDatum(construct_md_array(messages, error_nulls, 1, dims, lbs, TEXTOID, -1,
												   false, TYPALIGN_INT))
			},
			NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the outcomes of commands sent at commit");
	SPI_finish();
	return k;
}

/*
 * One round of the worker (see the top of this file), in cxt, which it
 * resets.  Returns true when it settled any command: more may be waiting
 * (a round that settled none, all of its commands to go again later,
 * waits for the next heartbeat).  Does nothing unless the extension is at
 * this library's version.
 */
bool
dc_at_commit_round(MemoryContext cxt)
{
	PendingCommand *cands = NULL;
	char	  **roles;
	int			nroles = 0;
	int			ncands = 0;
	int		   *chosen;
	int			n = 0;
	int			settled;
	Oid			extension;

	MemoryContextReset(cxt);
	MemoryContextSwitchTo(cxt);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(cxt);
	if (dc_extension_is_current(&extension))
	{
		spi_connect();
		nroles = waiting_roles(cxt, &roles);
		if (nroles > 0)
			ncands = candidates(cxt, roles, nroles, Max(DC_ASK_WINDOW / nroles, 1), &cands);
		SPI_finish();
		MemoryContextSwitchTo(cxt);
		n = take_turns(cands, ncands, roles, nroles, &chosen);
	}
	if (n == 0)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return false;
	}

	pgstat_report_activity(STATE_RUNNING, "durable_cluster commands sent at commit");
	for (int i = 0; i < n; i++)
		prepare(&cands[chosen[i]], cxt);
	send_all(cands, chosen, n);
	settled = record_outcomes(cands, chosen, n);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return settled > 0;
}

/*
 * Remove outcomes older than at_commit_retention, 1000 at a time (the
 * partial index on done_at makes it cheap when there are none), in a
 * transaction of its own.  Returns true when more may be waiting.
 */
bool
dc_at_commit_retention(void)
{
	bool		more = false;
	Oid			extension;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (dc_extension_is_current(&extension))
	{
		spi_connect();
		if (SPI_execute_with_args(
				"DELETE FROM durable_cluster.pending_commands"
				" WHERE id IN (SELECT id FROM durable_cluster.pending_commands"
				"               WHERE status <> 'pending'"
				"                 AND done_at < now() - $1 * interval '1 millisecond'"
				"               LIMIT 1000)",
				1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(dc_at_commit_retention_ms)},
				NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove old commands sent at commit");
		more = (SPI_processed == 1000);
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return more;
}
