/*-------------------------------------------------------------------------
 *
 * saga.c
 *	  Transfers between two entities that survive failures: dc_transfer()
 *	  and the saga worker, which finishes the transfers a failure left
 *	  half done.
 *
 * A transfer (a saga) is at most three commands, each with a command_id
 * made of the saga's id, so that a step is applied once however often it
 * is sent (command_log):
 *
 *	 1. deduct_balance on the source ("saga-<id>-deduct");
 *	 2. add_balance on the target ("saga-<id>-add");
 *	 3. if the add was rejected, refund_balance on the source
 *		("saga-<id>-refund").
 *
 * The saga's row in durable_cluster.sagas is written by the node that
 * applies a step, in that step's transaction (node.c hands it to
 * write_batch): the deduct creates it as running, the add completes it,
 * the refund compensates it.  So the row and the balances cannot
 * disagree, whatever fails when.  A deduct that is rejected (insufficient
 * balance) moved nothing and writes no row.
 *
 * Who sends a step reads the row's step and sends the next one: the
 * caller of dc_transfer, and, for a saga running with no progress for
 * ask_timeout (its caller failed, or gave up on an unreachable node), the
 * saga worker of each server.  Two of them at once send the same command
 * ids; the second gets the first's logged reply.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "ask.h"
#include "at_commit.h"
#include "entity.h"
#include "jsonb_build.h"
#include "remote.h"
#include "retention.h"
#include "saga.h"
#include "settings.h"
#include "shared_memory.h"
#include "state_table.h"
#include "tenant.h"

PG_FUNCTION_INFO_V1(dc_transfer);

/* sagas the worker takes up per round */
#define RECOVER_PER_ROUND	100

/* the saga worker's memory for one round, reset by each */
static MemoryContext round_context = NULL;

typedef struct Saga
{
	int64		id;
	char	   *from_mall;
	char	   *from_user;
	char	   *to_mall;
	char	   *to_user;
	int64		amount_cents;	/* checked as a command's amount */
	Jsonb	   *record;			/* what a step's node writes to the row */
} Saga;

/* The row's step after a step command, or NULL if it writes none. */
const char *
dc_saga_step(DcCommandKind kind, bool applied)
{
	switch (kind)
	{
		case DC_CMD_DEDUCT_BALANCE:
			return applied ? "deducted" : NULL;
		case DC_CMD_ADD_BALANCE:
			return applied ? "added" : "add_rejected";
		case DC_CMD_REFUND_BALANCE:
			return applied ? "refunded" : "refund_rejected";
		default:
			elog(ERROR, "command kind %d is not a step of a transfer", (int) kind);
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * dc_transfer's amount argument, checked as the amount of a deduct:
 * its cents.
 */
static int64
amount_argument(Numeric amount)
{
	JsonbParseState *ps = NULL;
	DcCommand  *check = palloc(sizeof(DcCommand));

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_string(&ps, "amount",
				   DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(amount))));
	dc_command_parse("deduct_balance",
					 JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL)), check);
	return check->amount_cents;
}

static void
saga_record(Saga *s)
{
	JsonbParseState *ps = NULL;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_int(&ps, "saga_id", s->id);
	dc_push_string(&ps, "from_mall", s->from_mall);
	dc_push_string(&ps, "from_user", s->from_user);
	dc_push_string(&ps, "to_mall", s->to_mall);
	dc_push_string(&ps, "to_user", s->to_user);
	dc_push_money(&ps, "amount", s->amount_cents);
	s->record = JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

/*
 * A step's command: its amount checked as any command's, and the step's
 * command_id, which no client may give (entity.c).
 */
static void
step_command(const Saga *s, const char *command, const char *suffix, DcCommand *cmd)
{
	JsonbParseState *ps = NULL;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_money(&ps, "amount", s->amount_cents);
	dc_command_parse(command, JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL)),
					 cmd);
	snprintf(cmd->command_id, sizeof(cmd->command_id),
			 DC_SAGA_ID_PREFIX INT64_FORMAT "-%s", s->id, suffix);
}

/* A string value of a saga record, or an error. */
static char *
record_string(Jsonb *record, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&record->root, key, strlen(key), NULL);

	if (v == NULL || v->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded saga record has no string \"%s\"", key));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * A step of a transfer that another server forwards (forward.c), checked
 * as if it came from SQL: the command and its amount as dc_command_parse
 * checks them, the step's reserved command_id made of the record's
 * saga_id, the record's amount equal to the step's, and the entity the
 * step is for the record's source (deduct, refund) or target (add).
 */
void
dc_saga_step_parse(const char *name, Jsonb *payload, Jsonb *record,
				   const char *mall_id, const char *user_id, DcCommand *cmd)
{
	Saga		s;
	JsonbValue *v;
	DcCommand	from_record;
	const char *suffix;
	bool		on_source;
	char		expected_id[DC_MAX_ID_BYTES + 1];
	JsonbValue *id = getKeyJsonValueFromContainer(&payload->root, "command_id", 10, NULL);

	if (!JB_ROOT_IS_OBJECT(record) || JB_ROOT_IS_SCALAR(record) ||
		VARSIZE(record) > DC_MAX_PAYLOAD_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded saga record must be a JSON object of at most %d bytes",
					   DC_MAX_PAYLOAD_BYTES));
	v = getKeyJsonValueFromContainer(&record->root, "saga_id", 7, NULL);
	if (v == NULL || v->type != jbvNumeric)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded saga record has no numeric \"saga_id\""));
	s.id = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
	s.from_mall = record_string(record, "from_mall");
	s.from_user = record_string(record, "from_user");
	s.to_mall = record_string(record, "to_mall");
	s.to_user = record_string(record, "to_user");
	v = getKeyJsonValueFromContainer(&record->root, "amount", 6, NULL);
	if (v == NULL || v->type != jbvString ||
		!dc_money_parse(pnstrdup(v->val.string.val, v->val.string.len), &s.amount_cents))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded saga record has no \"amount\""));

	if (strcmp(name, "deduct_balance") == 0)
		suffix = "deduct", on_source = true;
	else if (strcmp(name, "add_balance") == 0)
		suffix = "add", on_source = false;
	else if (strcmp(name, "refund_balance") == 0)
		suffix = "refund", on_source = true;
	else
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s is not a step of a transfer", dc_quote_for_message(name)));

	/* the command as a client would send it, then the step's own id */
	dc_command_parse(name, DatumGetJsonbP(DirectFunctionCall2(jsonb_delete,
															  JsonbPGetDatum(payload),
															  CStringGetTextDatum("command_id"))),
					 cmd);
	snprintf(expected_id, sizeof(expected_id), DC_SAGA_ID_PREFIX INT64_FORMAT "-%s",
			 s.id, suffix);
	if (id == NULL || id->type != jbvString || id->val.string.len != strlen(expected_id) ||
		memcmp(id->val.string.val, expected_id, id->val.string.len) != 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded step of saga " INT64_FORMAT " must have command_id \"%s\"",
					   s.id, expected_id));
	strlcpy(cmd->command_id, expected_id, sizeof(cmd->command_id));
	step_command(&s, name, suffix, &from_record);
	if (from_record.amount_cents != cmd->amount_cents)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded step of saga " INT64_FORMAT " has another amount than its record",
					   s.id));
	if (strcmp(mall_id, on_source ? s.from_mall : s.to_mall) != 0 ||
		strcmp(user_id, on_source ? s.from_user : s.to_user) != 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("forwarded step of saga " INT64_FORMAT " is not for the entity its record names",
					   s.id));
	cmd->saga_step = true;
	cmd->payload_len = VARSIZE(record);
	memcpy(cmd->payload, record, VARSIZE(record));
}

static char *
reply_string(Jsonb *reply, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&reply->root, key, strlen(key), NULL);

	return (v != NULL && v->type == jbvString)
		? pnstrdup(v->val.string.val, v->val.string.len) : NULL;
}

/*
 * Send a step and return whether it was applied (its reply's result is
 * applied_result); otherwise *error is the rejection.
 */
static bool
send_step(const Saga *s, const char *command, const char *suffix, const char *applied_result,
		  const char *mall_id, const char *user_id, char **error)
{
	DcCommand  *cmd = palloc(sizeof(DcCommand));
	Jsonb	   *reply;
	char	   *result;

	step_command(s, command, suffix, cmd);
	cmd->saga_step = true;
	cmd->payload_len = VARSIZE(s->record);
	memcpy(cmd->payload, s->record, VARSIZE(s->record));
	reply = dc_ask(mall_id, user_id, cmd, NULL);

	if ((result = reply_string(reply, "result")) != NULL)
	{
		if (strcmp(result, applied_result) != 0)
			elog(ERROR, "step %s of saga " INT64_FORMAT " was answered with \"%s\"",
				 cmd->command_id, s->id, result);
		return true;
	}
	*error = reply_string(reply, "error");
	if (*error == NULL)
		elog(ERROR, "step %s of saga " INT64_FORMAT " got a reply without result or error",
			 cmd->command_id, s->id);
	return false;
}

static Jsonb *
outcome(const Saga *s, const char *status, const char *step, const char *error)
{
	JsonbParseState *ps = NULL;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_int(&ps, "saga_id", s->id);
	dc_push_string(&ps, "status", status);
	dc_push_string(&ps, "step", step);
	dc_push_money(&ps, "amount", s->amount_cents);
	dc_push_string(&ps, "error", error);
	return JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

/*
 * Take saga s on from its row's step (NULL: not started) to its end.
 * Returns what dc_transfer replies.
 */
static Jsonb *
drive(const Saga *s, const char *step)
{
	char	   *error = NULL;
	char	   *refund_error;

	if (step == NULL)
	{
		if (!send_step(s, "deduct_balance", "deduct", "balance_deducted",
					   s->from_mall, s->from_user, &error))
			return outcome(s, "rejected", NULL, error);
		step = "deducted";
	}
	if (strcmp(step, "deducted") == 0)
	{
		if (send_step(s, "add_balance", "add", "balance_added",
					  s->to_mall, s->to_user, &error))
			return outcome(s, "completed", "added", NULL);
	}
	if (send_step(s, "refund_balance", "refund", "balance_refunded",
				  s->from_mall, s->from_user, &refund_error))
		return outcome(s, "compensated", "refunded", error);
	return outcome(s, "running", "refund_rejected", refund_error);
}

/* Error context of a transfer: it may well go on without its caller. */
static void
transfer_error_context(void *arg)
{
	errcontext("transfer saga " INT64_FORMAT "; if its deduct was applied, the saga worker completes or compensates it (see dc.sagas)",
			   *(int64 *) arg);
}

/*
 * dc_transfer(from_mall, from_user, to_mall, to_user, amount) RETURNS jsonb
 * {"saga_id", "status": completed | compensated | rejected | running (a
 *  rejected refund: see docs/operations.md), "step", "amount", "error"}
 */
Datum
dc_transfer(PG_FUNCTION_ARGS)
{
	Saga		s;
	Numeric		amount;
	ErrorContextCallback errcallback;
	Jsonb	   *result;
	Oid			seq;

	dc_check_usable();
	s.from_mall = dc_id_argument(fcinfo, 0, "from_mall");
	s.from_user = dc_id_argument(fcinfo, 1, "from_user");
	s.to_mall = dc_id_argument(fcinfo, 2, "to_mall");
	s.to_user = dc_id_argument(fcinfo, 3, "to_user");
	if (PG_ARGISNULL(4))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("amount must not be NULL"));
	amount = PG_GETARG_NUMERIC(4);
	if (strcmp(s.from_mall, s.to_mall) == 0 && strcmp(s.from_user, s.to_user) == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a transfer needs two different entities"));
	/* its refund, if it needs one, is part of the deduct */
	dc_tenant_check(NULL, s.from_mall, "deduct_balance");
	dc_tenant_check(NULL, s.to_mall, "add_balance");
	/* checked as the steps will check it, before anything is done */
	s.amount_cents = amount_argument(amount);

	/* saga ids come from the store, whichever server runs this */
	if (dc_store_is_here())
	{
		seq = get_relname_relid("saga_seq", get_namespace_oid("durable_cluster", false));
		if (!OidIsValid(seq))
			elog(ERROR, "durable_cluster.saga_seq does not exist");
		s.id = nextval_internal(seq, false);
	}
	else
		s.id = pg_strtoint64(dc_store_value("SELECT nextval('durable_cluster.saga_seq')",
											0, NULL));
	saga_record(&s);

	errcallback.callback = transfer_error_context;
	errcallback.arg = &s.id;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	result = drive(&s, NULL);
	error_context_stack = errcallback.previous;
	PG_RETURN_JSONB_P(result);
}

/* ---- the saga worker ---- */

static char *
copy_value(HeapTuple tup, int col)
{
	return SPI_getvalue(tup, SPI_tuptable->tupdesc, col);
}

/*
 * The step of a saga that is still to be driven on, read afresh (the list
 * of a round may be seconds old by the time a saga's turn comes); NULL if
 * it has moved on.  So a step is sent again only while its saga still
 * waits for it, well within the command log's window of ids.
 */
static char *
current_step(int64 saga_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *step = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT step FROM durable_cluster.sagas"
							  " WHERE saga_id = $1 AND status = 'running'"
							  "   AND step IN ('deducted', 'add_rejected')",
							  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(saga_id)},
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read durable_cluster.sagas");
	if (SPI_processed == 1)
	{
		MemoryContext spi = MemoryContextSwitchTo(cxt);

		step = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return step;
}

/* Run fn(saga) in a transaction of its own; false if it failed (logged). */
static bool
run_in_transaction(void (*fn) (Saga *), Saga *saga, MemoryContext cxt)
{
	bool		ok = true;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(saga);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				errmsg("durable_cluster: saga " INT64_FORMAT " could not go on yet: %s",
					   saga->id, edata->message));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/* Drive a saga on from its current step, if it still waits for one. */
static void
resume(Saga *saga)
{
	char	   *step = current_step(saga->id);
	Jsonb	   *result;

	if (step == NULL)
		return;
	result = drive(saga, step);
	ereport(LOG,
			errmsg("durable_cluster: saga " INT64_FORMAT " resumed at step %s: %s",
				   saga->id, step, JsonbToCString(NULL, &result->root, 0)));
}

/*
 * A saga that could not go on goes to the back of the queue (ordered by
 * updated_at), so that sagas that cannot be served yet do not keep the
 * others waiting round after round.
 */
static void
postpone(Saga *saga)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("UPDATE durable_cluster.sagas SET updated_at = now()"
							  " WHERE saga_id = $1 AND status = 'running'",
							  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(saga->id)},
							  NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update durable_cluster.sagas");
	SPI_finish();
}

/*
 * The sagas running without progress for ask_timeout (their caller is
 * gone, or gave up), longest waiting first, into cxt.
 */
static int
stalled_sagas(MemoryContext cxt, Saga **sagas)
{
	int			n;

	if (!OidIsValid(get_extension_oid("durable_cluster", true)))
		return 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT saga_id, from_mall, from_user, to_mall, to_user, amount"
							  "  FROM durable_cluster.sagas"
							  " WHERE status = 'running' AND step IN ('deducted', 'add_rejected')"
							  "   AND updated_at < now() - $1 * interval '1 millisecond'"
							  " ORDER BY updated_at LIMIT " CppAsString2(RECOVER_PER_ROUND),
							  1, (Oid[]) {INT4OID}, (Datum[]) {Int32GetDatum(dc_ask_timeout_ms)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read durable_cluster.sagas");
	n = SPI_processed;
	{
		MemoryContext spi = MemoryContextSwitchTo(cxt);

		*sagas = palloc(sizeof(Saga) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			Saga	   *saga = &(*sagas)[i];

			saga->id = pg_strtoint64(copy_value(tup, 1));
			saga->from_mall = copy_value(tup, 2);
			saga->from_user = copy_value(tup, 3);
			saga->to_mall = copy_value(tup, 4);
			saga->to_user = copy_value(tup, 5);
			if (!dc_money_parse(copy_value(tup, 6), &saga->amount_cents))
				elog(ERROR, "saga " INT64_FORMAT " has a malformed amount", saga->id);
			saga_record(saga);
		}
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return n;
}

/*
 * One round: drive on each stalled saga, each in a transaction of its own
 * (a node's write of the saga's row never waits for a round), so that one
 * that cannot go on yet (its node is down) does not hold up the others.
 */
static bool
recover_sagas(void)
{
	MemoryContext cxt = round_context;
	Saga	   *sagas;
	int			n;

	MemoryContextReset(cxt);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	n = stalled_sagas(cxt, &sagas);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	if (n == 0)
		return false;

	pgstat_report_activity(STATE_RUNNING, "durable_cluster saga recovery");
	for (int i = 0; i < n; i++)
	{
		SetCurrentStatementStartTimestamp();
		if (!run_in_transaction(resume, &sagas[i], cxt))
			(void) run_in_transaction(postpone, &sagas[i], cxt);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	return false;
}

/*
 * On the store's server, one round of retention.c in a transaction of its
 * own.  Returns true when more may be waiting.
 */
static bool
retention_round(void)
{
	bool		more;

	pgstat_report_activity(STATE_RUNNING, "durable_cluster retention");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	more = dc_retention_round();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return more;
}

/*
 * Once for each extension this server's database gets (CREATE EXTENSION
 * or the update to this version): warn in the log where roles other than
 * its owner can create objects beside the API, durable_cluster.
 * api_exposure() (docs/security.md, "The API cannot be shadowed").
 */
static bool
warn_api_exposure(void)
{
	static Oid	checked = InvalidOid;
	Oid			extension;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (dc_extension_is_current(&extension) && extension != checked)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT schema_name, creators FROM durable_cluster.api_exposure()",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not run durable_cluster.api_exposure()");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			char	   *schema = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);

			ereport(WARNING,
					errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					errmsg("roles other than its owner can create objects in schema %s, which holds durable_cluster's API: %s",
						   quote_identifier(schema), SPI_getvalue(tup, SPI_tuptable->tupdesc, 2)),
					errdetail("Such a role can add an overload that a call of the API by its short name (dc_send_command, ...) picks instead of the extension's function; calls by qualified name (dc.send_command) are safe."),
					errhint("REVOKE CREATE ON SCHEMA %s FROM PUBLIC (and from the roles named), and call the API as dc.send_command(...).",
							quote_identifier(schema)));
		}
		SPI_finish();
		checked = extension;
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return false;
}

/* The rounds over commands sent at commit (at_commit.c). */
static bool
at_commit_round(void)
{
	return dc_at_commit_round(round_context);
}

/*
 * Run one of the worker's rounds: its failure (say, the extension being
 * dropped meanwhile) is logged and ends that round only, so that no round
 * keeps the others from running.  True when the round says more may be
 * waiting.
 */
static bool
guarded(bool (*round) (void))
{
	volatile bool more = false;

	PG_TRY();
	{
		more = round();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		MemoryContextSwitchTo(round_context);
		pgstat_report_activity(STATE_IDLE, NULL);
		more = false;
	}
	PG_END_TRY();
	return more;
}

static void
saga_worker_gone(int code, Datum arg)
{
	SpinLockAcquire(&dc_shared->mutex);
	dc_shared->saga_pid = 0;
	dc_shared->saga_latch = NULL;
	SpinLockRelease(&dc_shared->mutex);
}

void
dc_saga_worker_main(Datum main_arg)
{
	SpinLockAcquire(&dc_shared->mutex);
	dc_shared->saga_pid = MyProcPid;
	dc_shared->saga_latch = MyLatch;
	SpinLockRelease(&dc_shared->mutex);
	before_shmem_exit(saga_worker_gone, (Datum) 0);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/*
	 * As the cluster's role, no superuser, with an empty search_path: the
	 * worker's queries name everything they use.  Until a node of this
	 * server has seen that role in the catalog, it may not exist yet
	 * (CREATE EXTENSION makes it): wait, rather than fail and be
	 * restarted.  A node sets our latch then, or, on a server without
	 * nodes, the first backend that calls a function of the API
	 * (dc_check_usable).
	 */
	while (!dc_shared->cluster_role_ready)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 dc_heartbeat_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	BackgroundWorkerInitializeConnection(dc_database, DC_CLUSTER_ROLE, 0);
	SetConfigOption("search_path", "", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", psprintf("%d", dc_failure_timeout_ms),
					PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("durable_cluster sagas");
	round_context = AllocSetContextCreate(TopMemoryContext, "durable_cluster saga round",
										  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 dc_heartbeat_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			dc_check_timeouts();
		}

		{
			bool		more = false;

			(void) guarded(warn_api_exposure);
			(void) guarded(recover_sagas);
			more |= guarded(at_commit_round);
			more |= guarded(dc_at_commit_retention);
			if (dc_store_is_here())
				more |= guarded(retention_round);
			/* a backlog drains round after round, without waiting */
			if (more)
				SetLatch(MyLatch);
		}
	}
}
