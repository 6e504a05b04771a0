/*-------------------------------------------------------------------------
 *
 * user_command.c
 *	  Commands without recompiling: dc_register_command(),
 *	  dc_unregister_command() and durable_cluster.run_command(), which runs
 *	  a handler for a node.
 *
 * The registry is the table durable_cluster.commands.  Only the extension's
 * owner may write it, so that a registration always passes the checks
 * below: registering needs EXECUTE on dc_register_command (superusers and
 * dc_admin), a name no built-in command has, a handler of the signature
 * (state jsonb, payload jsonb) RETURNS jsonb, EXECUTE on that handler and
 * the privileges of the handler's owner.  The registering role is recorded.
 *
 * A handler runs when its command's node applies it, in the store, in the
 * transaction that then writes the node's batch (node.c opens it).  It
 * runs:
 *
 * - in a subtransaction of its own, so that an error it raises undoes only
 *   what it did and fails only its command;
 * - as the handler function's owner, as a SECURITY DEFINER function does,
 *   in a security-restricted operation (no SET ROLE, no temporary objects),
 *   and only while the registering role has that owner's privileges: so
 *   whoever may change the function's body can gain nothing by it, and a
 *   registration cannot lend a function more privileges than its
 *   registrant has;
 * - with search_path set to pg_catalog, pg_temp, so that names it does not
 *   qualify resolve to the system's and not to objects someone else put
 *   first in the store session's path; settings it changes are undone
 *   after it, and session-level advisory locks it took are released;
 * - unable to send commands, at once or at commit (it would wait for its
 *   own node, or queue work behind the batch it is part of).
 *
 * The state it returns is checked (entity.c, dc_entity_check_doc): it may
 * not change the entity's ids nor give a built-in key a value no built-in
 * command could; keys of its own are kept with the state.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "entity.h"
#include "pg_compat.h"
#include "remote.h"
#include "settings.h"
#include "state_table.h"
#include "user_command.h"

PG_FUNCTION_INFO_V1(dc_register_command);
PG_FUNCTION_INFO_V1(dc_unregister_command);
PG_FUNCTION_INFO_V1(dc_run_command);

#define FIXED_SEARCH_PATH "pg_catalog, pg_temp"

bool		dc_in_command_handler = false;

/*
 * The registry row of name: its handler and the role that registered it.
 * False if there is none.  A primary-key lookup: callers need no privilege
 * on the table.
 */
static bool
lookup_command(const char *name, Oid *handler, Oid *registrant)
{
	Oid			pkey;
	Relation	rel = dc_open_commands(AccessShareLock, &pkey);
	Relation	index = index_open(pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	Datum		key = CStringGetTextDatum(name);
	bool		found;
	bool		isnull;

	found = dc_find_by_key(rel, index, &key, 1, slot);
	if (found)
	{
		*handler = DatumGetObjectId(slot_getattr(slot, COMMANDS_HANDLER, &isnull));
		*registrant = DatumGetObjectId(slot_getattr(slot, COMMANDS_REGISTERED_BY, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return found;
}

/* Is name registered, in the store's registry, wherever that is? */
static bool
command_registered(const char *name)
{
	Oid			handler;
	Oid			registrant;

	if (strlen(name) >= NAMEDATALEN)
		return false;
	if (!dc_store_is_here())
		return dc_store_value("SELECT 1 FROM durable_cluster.commands WHERE name = $1",
							  1, &name) != NULL;
	return lookup_command(name, &handler, &registrant);
}

/* 22023 unless name is a built-in command or a registered one. */
void
dc_check_command_exists(const char *name)
{
	if (!dc_command_is_builtin(name) && !command_registered(name))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("unknown command %s", dc_quote_for_message(name)),
				errdetail("Built-in commands are: %s.", dc_builtin_command_list()),
				errhint("Commands registered with dc.register_command() are listed in dc.commands."));
}

/*
 * A command as a client names it: built in, or registered with
 * dc.register_command(); then validated by dc_command_parse().
 */
void
dc_parse_client_command(const char *name, Jsonb *payload, DcCommand *cmd)
{
	dc_check_command_exists(name);
	dc_command_parse(name, payload, cmd);
}

/* The registry is the store's: registrations are made there. */
static void
check_store_is_here(void)
{
	if (!dc_store_is_here())
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("commands are registered on the server that holds the cluster store"),
				errhint("Connect to the server durable_cluster.store names and call this there."));
}

/* A command name argument: lower-case letters, digits and _, from a letter. */
static char *
name_argument(FunctionCallInfo fcinfo)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("command name must not be NULL"));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (name[0] < 'a' || name[0] > 'z' || strlen(name) >= NAMEDATALEN ||
		strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_NAME),
				errmsg("invalid command name %s", dc_quote_for_message(name)),
				errdetail("A command name is 1 to %d lower-case letters, digits and underscores, starting with a letter.",
						  NAMEDATALEN - 1));
	if (dc_command_is_builtin(name))
		ereport(ERROR,
				errcode(ERRCODE_RESERVED_NAME),
				errmsg("\"%s\" is a built-in command", name),
				errdetail("Built-in commands cannot be registered, replaced or unregistered."));
	return name;
}

/*
 * Enter a security-restricted operation as role, with the fixed
 * search_path; returns the GUC nest level for dc_leave_as().  Used to run
 * a handler as its owner, and statements on the extension's tables as
 * their owner once the caller passed the checks (the caller's search_path
 * must not apply: its functions and operators would run as the owner).
 */
int
dc_enter_as(Oid role, Oid *save_user, int *save_sec)
{
	int			nestlevel;

	GetUserIdAndSecContext(save_user, save_sec);
	SetUserIdAndSecContext(role, *save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", FIXED_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

/* Leave it: undo every setting changed since, and become the caller again. */
void
dc_leave_as(int nestlevel, Oid save_user, int save_sec)
{
	AtEOXact_GUC(false, nestlevel);
	SetUserIdAndSecContext(save_user, save_sec);
}

/*
 * Run a statement on durable_cluster.commands as the table's owner: the
 * caller passed the checks, and has no privilege on the table itself.
 * The caller's search_path does not apply (its operators could run as the
 * owner otherwise).  Returns the number of rows processed.
 */
static uint64
write_registry(const char *sql, int nargs, Oid *types, Datum *values)
{
	Oid			pkey;
	Relation	rel = dc_open_commands(AccessShareLock, &pkey);
	Oid			table_owner = rel->rd_rel->relowner;
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
	uint64		processed;

	table_close(rel, AccessShareLock);
	nestlevel = dc_enter_as(table_owner, &save_user, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "could not write durable_cluster.commands");
	processed = SPI_processed;
	SPI_finish();
	dc_leave_as(nestlevel, save_user, save_sec);
	return processed;
}

/* The owner of a handler function. */
static Oid
handler_owner(Oid handler)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", handler);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/* dc_register_command(name text, handler regprocedure) RETURNS void */
Datum
dc_register_command(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			handler;
	Oid			existing_handler;
	Oid			existing_registrant;
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		fits;

	check_store_is_here();
	name = name_argument(fcinfo);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("handler must not be NULL"));
	handler = PG_GETARG_OID(1);
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_FUNCTION),
				errmsg("function with OID %u does not exist", handler));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	fits = proc->prokind == PROKIND_FUNCTION && !proc->proretset &&
		proc->prorettype == JSONBOID && proc->pronargs == 2 &&
		proc->proargtypes.values[0] == JSONBOID && proc->proargtypes.values[1] == JSONBOID;
	ReleaseSysCache(tup);
	if (!fits)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				errmsg("handler %s does not have the signature of a command handler",
					   format_procedure(handler)),
				errdetail("A handler is a function (state jsonb, payload jsonb) RETURNS jsonb that returns the new state."));
	if (dc_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("permission denied for function %s", format_procedure(handler)),
				errdetail("The role that registers a handler must be allowed to execute it."));
	if (!has_privs_of_role(GetUserId(), handler_owner(handler)))
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("handler %s is owned by %s, whose privileges the registering role does not have",
					   format_procedure(handler),
					   GetUserNameFromId(handler_owner(handler), false)),
				errdetail("A handler runs as its owner."));
	if (lookup_command(name, &existing_handler, &existing_registrant))
		ereport(ERROR,
				errcode(ERRCODE_DUPLICATE_OBJECT),
				errmsg("command \"%s\" is already registered, with handler %s",
					   name, format_procedure(existing_handler)),
				errhint("Unregister it first with dc.unregister_command('%s').", name));

	write_registry("INSERT INTO durable_cluster.commands (name, handler, registered_by) "
				   "VALUES ($1, $2, $3)",
				   3, (Oid[]) {TEXTOID, REGPROCEDUREOID, REGROLEOID},
				   (Datum[]) {CStringGetTextDatum(name), ObjectIdGetDatum(handler),
				   ObjectIdGetDatum(GetUserId())});
	PG_RETURN_VOID();
}

/* dc_unregister_command(name text) RETURNS void */
Datum
dc_unregister_command(PG_FUNCTION_ARGS)
{
	char	   *name;

	check_store_is_here();
	name = name_argument(fcinfo);

	if (write_registry("DELETE FROM durable_cluster.commands WHERE name OPERATOR(pg_catalog.=) $1",
					   1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(name)}) == 0)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("command \"%s\" is not registered", name));
	PG_RETURN_VOID();
}

/*
 * Call command name's handler as its owner, with the fixed search_path,
 * and check what it returns.  Raises the handler's error, or one of the
 * checks'.
 */
static Jsonb *
call_handler(const char *name, Jsonb *state, Jsonb *payload)
{
	Oid			handler;
	Oid			registrant;
	Oid			owner;
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
	bool		was_in_handler = dc_in_command_handler;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(call, 2);
	Datum		result;
	Jsonb	   *new_state;

	if (!lookup_command(name, &handler, &registrant))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("command \"%s\" is not registered any more", name));
	if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(handler)))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_FUNCTION),
				errmsg("the handler of command \"%s\" was dropped", name),
				errhint("Unregister the command and register it again with its new handler."));
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(registrant)))
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_OBJECT),
				errmsg("the role that registered command \"%s\" was dropped", name),
				errhint("Unregister the command and register it again."));
	owner = handler_owner(handler);
	if (!has_privs_of_role(registrant, owner))
		ereport(ERROR,
				errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				errmsg("the handler %s of command \"%s\" is now owned by %s, whose privileges the role that registered it does not have",
					   format_procedure(handler), name, GetUserNameFromId(owner, false)));

	nestlevel = dc_enter_as(owner, &save_user, &save_sec);
	fmgr_info(handler, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 2, InvalidOid, NULL, NULL);
	call->args[0].value = JsonbPGetDatum(state);
	call->args[0].isnull = false;
	call->args[1].value = JsonbPGetDatum(payload);
	call->args[1].isnull = false;
	dc_in_command_handler = true;
	result = FunctionCallInvoke(call);
	dc_in_command_handler = was_in_handler;
	if (call->isnull)
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("handler of command \"%s\" returned NULL", name),
				errhint("A handler returns the new state; to reject a command, raise an error."));
	new_state = DatumGetJsonbP(result);
	dc_entity_check_doc(new_state, state, name);
	dc_leave_as(nestlevel, save_user, save_sec);
	return new_state;
}

/*
 * durable_cluster.run_command(name text, state jsonb, payload jsonb,
 *                             OUT state jsonb, OUT sqlstate text,
 *                             OUT message text)
 * Run a registered command's handler in a subtransaction.  Returns the
 * new state, or (NULL, the SQLSTATE, the message) of the error that undid
 * it.
 */
Datum
dc_run_command(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		was_in_handler = dc_in_command_handler;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	dc_require_arguments(fcinfo, "durable_cluster.run_command", -1);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "durable_cluster.run_command must return a record");

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		values[0] = JsonbPGetDatum(call_handler(text_to_cstring(PG_GETARG_TEXT_PP(0)),
												PG_GETARG_JSONB_P(1),
												PG_GETARG_JSONB_P(2)));
		nulls[1] = nulls[2] = true;
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		dc_in_command_handler = was_in_handler;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		nulls[0] = true;
		nulls[1] = nulls[2] = false;
		values[1] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		values[2] = CStringGetTextDatum(edata->message);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;

	/*
	 * Session-level advisory locks it took would stay with the node's store
	 * session, held against everyone, for as long as that lives: they end
	 * with the handler (the node takes none of its own).
	 */
	LockReleaseSession(USER_LOCKMETHOD);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
