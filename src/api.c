/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions: dc_send_command, dc_tell, dc_send_commands,
 *	  dc_get_state, dc_shard_id, dc_java_hashcode, and the cluster's own
 *	  durable_cluster.self_address and durable_cluster.forward (a command
 *	  another server hands on, forward.c).
 *
 * The command functions validate their input here, in the caller's
 * backend, and hand the commands to ask.c, which sends them to their
 * owners and waits: dc_send_command for the reply, dc_tell until the
 * owner has taken the command as its own, dc_send_commands for the replies
 * of many.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "ask.h"
#include "durable.h"
#include "entity.h"
#include "forward.h"
#include "jsonb_build.h"
#include "remote.h"
#include "saga.h"
#include "settings.h"
#include "shard_hash.h"
#include "shared_memory.h"
#include "state_table.h"
#include "tenant.h"
#include "user_command.h"

PG_FUNCTION_INFO_V1(dc_send_command);
PG_FUNCTION_INFO_V1(dc_tell);
PG_FUNCTION_INFO_V1(dc_send_commands);
PG_FUNCTION_INFO_V1(dc_get_state);
PG_FUNCTION_INFO_V1(dc_shard_id);
PG_FUNCTION_INFO_V1(dc_java_hashcode_sql);
PG_FUNCTION_INFO_V1(dc_self_address_sql);
PG_FUNCTION_INFO_V1(dc_forward_sql);

/* The arguments of dc_send_command and dc_tell, validated. */
static void
command_arguments(FunctionCallInfo fcinfo, char **mall_id, char **user_id, DcCommand *cmd)
{
	dc_check_usable();
	*mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	*user_id = dc_id_argument(fcinfo, 1, "user_id");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("command must not be NULL"),
				errhint("Known commands are: %s, and those in dc.commands.", dc_builtin_command_list()));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("payload must not be NULL"),
				errhint("Pass '{}' for a command without arguments."));
	dc_parse_client_command(text_to_cstring(PG_GETARG_TEXT_PP(2)), PG_GETARG_JSONB_P(3), cmd);
	dc_tenant_check(NULL, *mall_id, cmd->name);
}

Datum
dc_send_command(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	DcCommand	cmd;

	command_arguments(fcinfo, &mall_id, &user_id, &cmd);
	PG_RETURN_JSONB_P(dc_ask(mall_id, user_id, &cmd, NULL));
}

/*
 * Fire and forget: returns once the owner node has taken the command as
 * its own, without waiting for it to be applied and committed.
 */
Datum
dc_tell(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	DcCommand	cmd;
	DcAskOptions options = {dc_ask_timeout_ms, true, true};

	command_arguments(fcinfo, &mall_id, &user_id, &cmd);
	(void) dc_ask(mall_id, user_id, &cmd, &options);
	PG_RETURN_VOID();
}

/* how a call of dc_send_commands looks */
#define BULK_HINT "Pass a JSON array of objects such as {\"mall_id\": \"mall001\", \"user_id\": \"user001\", \"command\": \"add_balance\", \"payload\": {\"amount\": \"5.00\"}}; payload may be left out."

/* Which element of dc_send_commands' array an error is about. */
static void
bulk_error_context(void *arg)
{
	int			n = *(int *) arg;

	if (n > 0)
		errcontext("command %d of the array passed to dc.send_commands", n);
}

/* A string member of a command object, checked as an id or a name. */
static char *
bulk_string(JsonbContainer *obj, const char *key, bool is_id)
{
	JsonbValue	buf;
	JsonbValue *v = getKeyJsonValueFromContainer(obj, key, strlen(key), &buf);

	if (v == NULL || v->type == jbvNull)
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("%s is missing", key),
				errhint(BULK_HINT));
	if (v->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must be a JSON string", key),
				errhint(BULK_HINT));
	if (is_id)
		return dc_id_check(v->val.string.val, v->val.string.len, key);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * One element of dc_send_commands' array, validated as dc_send_command
 * validates its arguments.  allowed lists the "mall\x01command" pairs the
 * tenant check already let through in this call.
 */
static void
bulk_command(JsonbValue *elem, DcAsk *a, DcCommand *cmd, List **allowed)
{
	JsonbContainer *obj;
	JsonbValue	buf;
	JsonbValue *payload;
	int			known = 3;
	char	   *pair;
	ListCell   *lc;
	bool		checked = false;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a command must be a JSON object"),
				errhint(BULK_HINT));
	obj = elem->val.binary.data;
	a->mall_id = bulk_string(obj, "mall_id", true);
	a->user_id = bulk_string(obj, "user_id", true);
	payload = getKeyJsonValueFromContainer(obj, "payload", 7, &buf);
	if (payload != NULL)
		known++;
	if (JsonContainerSize(obj) != known)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a command object holds mall_id, user_id, command and payload, and nothing else"),
				errhint(BULK_HINT));
	dc_parse_client_command(bulk_string(obj, "command", false),
					 payload ? JsonbValueToJsonb(payload) :
					 DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))),
					 cmd);
	a->cmd = cmd;

	pair = psprintf("%s\x01%s", a->mall_id, cmd->name);
	foreach(lc, *allowed)
		checked = checked || strcmp(lfirst(lc), pair) == 0;
	if (!checked)
	{
		dc_tenant_check(NULL, a->mall_id, cmd->name);
		*allowed = lappend(*allowed, pair);
	}
}

/*
 * dc_send_commands(commands jsonb) RETURNS TABLE (n integer, reply jsonb,
 *                                                  sqlstate text, message text)
 *
 * Many commands in one call.  Every one is validated before any is sent:
 * bad input fails the call and sends nothing.  Then they go to their
 * owners as dc_ask_many sends them, and each row is the outcome of the
 * command at that position: its reply, each after its own commit, or its
 * error (a failed command does not fail the others).
 */
Datum
dc_send_commands(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DcAskOptions options = {dc_ask_timeout_ms, false, true};
	ErrorContextCallback errcallback;
	Jsonb	   *commands;
	DcAsk	   *asks;
	DcCommand  *cmds;
	List	   *allowed = NIL;
	int			current = 0;
	int			n;

	dc_check_usable();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("commands must not be NULL"),
				errhint(BULK_HINT));
	commands = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(commands) || JB_ROOT_IS_SCALAR(commands))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("commands must be a JSON array"),
				errhint(BULK_HINT));
	n = JB_ROOT_COUNT(commands);
	if (n > DC_MAX_BULK_COMMANDS)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("%d commands in one call; the limit is %d", n, DC_MAX_BULK_COMMANDS),
				errhint("Send them in several calls."));

	InitMaterializedSRF(fcinfo, 0);
	if (n == 0)
		return (Datum) 0;
	asks = palloc0(sizeof(DcAsk) * n);
	cmds = palloc(sizeof(DcCommand) * n);

	errcallback.callback = bulk_error_context;
	errcallback.arg = &current;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	for (current = 1; current <= n; current++)
		bulk_command(getIthJsonbValueFromContainer(&commands->root, current - 1),
					 &asks[current - 1], &cmds[current - 1], &allowed);
	error_context_stack = errcallback.previous;

	dc_ask_many(asks, n, &options);

	for (int i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = Int32GetDatum(i + 1);
		if (asks[i].sqlstate == 0)
		{
			values[1] = JsonbPGetDatum(asks[i].reply);
			nulls[2] = nulls[3] = true;
		}
		else
		{
			nulls[1] = true;
			values[2] = CStringGetTextDatum(unpack_sql_state(asks[i].sqlstate));
			values[3] = CStringGetTextDatum(asks[i].message);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * The owner of a shard: a node of this server by the shared map (no
 * second table read), else by the shards table as the active snapshot
 * sees it; NULL if none.
 */
static char *
shard_owner(int shard)
{
	Oid			pkey;
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	char	   *owner = NULL;
	char		address[DC_ADDRESS_BYTES];
	int			local = dc_map_owner(shard, dc_map_number_of_shards(), address);
	char		name[NAMEDATALEN];

	if (local >= 0)
	{
		dc_node_slot_name(local, name);
		return pstrdup(name);
	}

	rel = dc_open_shards(AccessShareLock, &pkey);
	index = index_open(pkey, AccessShareLock);
	slot = table_slot_create(rel, NULL);

	if (dc_find_by_key(rel, index, (Datum[]) {Int32GetDatum(shard)}, 1, slot))
	{
		bool		isnull;
		Datum		node = slot_getattr(slot, SHARDS_NODE, &isnull);

		if (!isnull)
			owner = TextDatumGetCString(node);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return owner;
}

/*
 * What the command get_state would reply, read straight from the tables by
 * primary key (state_table.c): the state, its revision, the shard and the
 * shard's owner.  An entity never stored reads as its initial state at
 * revision 0, as get_state answers for it.
 *
 * It reads the newest committed data, not the statement's snapshot: a
 * command acknowledged before the call is seen even in the same statement
 * or in a REPEATABLE READ transaction that began before it.
 *
 * Who may call it is who has EXECUTE on it (dc_client), within the malls
 * a restricted role may reach (tenant.c); the tables stay closed to
 * clients, whose reads would cross tenants.
 */
Datum
dc_get_state(PG_FUNCTION_ARGS)
{
	char	   *mall;
	char	   *user;
	Oid			pkey;
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	DcEntityState state;
	Jsonb	   *doc;
	int64		revision;
	int			shard;
	char	   *owner;

	dc_check_usable();
	mall = dc_id_argument(fcinfo, 0, "mall_id");
	user = dc_id_argument(fcinfo, 1, "user_id");
	dc_tenant_check(NULL, mall, "get_state");

	/*
	 * The store on another server: the same read there, for a caller
	 * allowed here; the cluster's role may call it there, in a statement
	 * of its own.
	 */
	if (!dc_store_is_here())
	{
		char	   *doc;

		doc = dc_store_value("SELECT dc.get_state($1, $2)", 2, (const char *[]) {mall, user});
		if (doc == NULL)
			elog(ERROR, "dc.get_state on the store returned NULL");
		PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(doc)));
	}

	PushActiveSnapshot(GetLatestSnapshot());
	rel = dc_open_entity_state(AccessShareLock, &pkey);
	index = index_open(pkey, AccessShareLock);
	slot = table_slot_create(rel, NULL);
	if (dc_find_by_key(rel, index, (Datum[]) {CStringGetTextDatum(mall),
											  CStringGetTextDatum(user)}, 2, slot))
	{
		bool		isnull;

		/* in the form a node replies with, whatever the stored form */
		revision = DatumGetInt64(slot_getattr(slot, ENTITY_REVISION, &isnull));
		doc = dc_entity_canonical(DatumGetJsonbPCopy(slot_getattr(slot, ENTITY_STATE, &isnull)),
								  mall, user, revision);
		shard = DatumGetInt32(slot_getattr(slot, ENTITY_SHARD_ID, &isnull));
	}
	else
	{
		dc_entity_init(&state);
		doc = dc_entity_to_jsonb(mall, user, &state);
		revision = 0;
		shard = dc_entity_shard(mall, user, dc_read_number_of_shards());
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	owner = shard_owner(shard);
	PopActiveSnapshot();
	/* a node may have committed it without the flush (durable.c) */
	dc_wait_durable_now();

	PG_RETURN_JSONB_P(dc_build_reply(true, "state", doc, revision, shard, owner));
}

/*
 * The number of shards: the store's settings when the store is here (read
 * without the privileges on the table a client does not have: it is no
 * secret), else the shard map the nodes copied from the store.
 */
static int
stored_number_of_shards(void)
{
	int			n = 0;

	if (dc_store_is_here())
		return dc_read_number_of_shards();
	if (dc_shared != NULL)
		n = dc_map_number_of_shards();
	if (n == 0)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("the number of shards is not known yet: no node has loaded the shard map"),
				errhint("Pass the number of shards as the third argument."));
	return n;
}

Datum
dc_shard_id(PG_FUNCTION_ARGS)
{
	char	   *mall_id = dc_id_argument(fcinfo, 0, "mall_id");
	char	   *user_id = dc_id_argument(fcinfo, 1, "user_id");
	int			nshards;

	if (PG_NARGS() < 3 || PG_ARGISNULL(2))
		nshards = stored_number_of_shards();
	else
		nshards = PG_GETARG_INT32(2);
	if (nshards < 1 || nshards > DC_MAX_SHARDS)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("number of shards must be between 1 and %d, got %d",
					   DC_MAX_SHARDS, nshards));
	PG_RETURN_INT32(dc_entity_shard(mall_id, user_id, nshards));
}

Datum
dc_java_hashcode_sql(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_INT32(dc_java_hashcode(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

Datum
dc_self_address_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(dc_self_address()));
}

/*
 * durable_cluster.forward(format integer, role_name text, mall_id text,
 *                         user_id text, command text, payload jsonb,
 *                         saga_record jsonb, tell boolean,
 *                         timeout_ms integer) RETURNS jsonb
 * A command another server of the cluster forwards, as its client sent it
 * (saga_record: the transfer whose step it is, else NULL), in one of the
 * formats of forward.h (role_name: one role, or the roles it acts as).
 * Served by this server's nodes only.  Everything is checked again here
 * as if it came from SQL, the malls of every role too:
 * a server trusts no bytes of another.  Returns the reply, NULL for a tell
 * that was taken, or {"moved": true} if none of this server's nodes owns
 * the shard.
 */
Datum
dc_forward_sql(PG_FUNCTION_ARGS)
{
	DcCommand  *cmd = palloc(sizeof(DcCommand));
	DcRoles		roles;
	int			format;
	char	   *mall_id;
	char	   *user_id;
	char	   *name;
	DcAskOptions options;
	Jsonb	   *reply;

	dc_require_arguments(fcinfo, "durable_cluster.forward", 6);
	dc_check_usable();
	format = PG_GETARG_INT32(0);
	if (format == DC_FORWARD_FORMAT_ONE_ROLE)
		dc_one_role(text_to_cstring(PG_GETARG_TEXT_PP(1)), &roles);
	else if (format == DC_FORWARD_FORMAT_ROLES)
		dc_roles_parse(text_to_cstring(PG_GETARG_TEXT_PP(1)), &roles);
	else
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("a command was forwarded in format %d; this server reads formats %d and %d",
					   format, DC_FORWARD_FORMAT_ONE_ROLE, DC_FORWARD_FORMAT_ROLES),
				errhint("The servers of one cluster must run versions of durable_cluster that forward in the same format."));
	mall_id = dc_id_argument(fcinfo, 2, "mall_id");
	user_id = dc_id_argument(fcinfo, 3, "user_id");
	name = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (PG_ARGISNULL(6))
	{
		dc_parse_client_command(name, PG_GETARG_JSONB_P(5), cmd);
		dc_tenant_check(&roles, mall_id, cmd->name);
	}
	else
	{
		dc_saga_step_parse(name, PG_GETARG_JSONB_P(5), PG_GETARG_JSONB_P(6),
						   mall_id, user_id, cmd);
		/* as dc_transfer checks it: a refund goes with its deduct */
		dc_tenant_check(&roles, mall_id,
						cmd->kind == DC_CMD_ADD_BALANCE ? "add_balance" : "deduct_balance");
	}

	options.timeout_ms = Max(PG_GETARG_INT32(8), 1);
	options.tell = PG_GETARG_BOOL(7);
	options.may_forward = false;
	options.roles = &roles;
	reply = dc_ask(mall_id, user_id, cmd, &options);
	if (reply == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(reply);
}
