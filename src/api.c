/*-------------------------------------------------------------------------
 *
 * api.c
 *	  SQL-callable functions: dc_send_command, dc_tell, dc_get_state, dc_shard_id,
 *	  dc_java_hashcode and durable_cluster.self_address.
 *
 * dc_send_command runs in the caller's backend: it validates the input,
 * finds the shard's owner in the shared-memory map, queues the command in
 * the owner's inbox and sleeps until the reply arrives or ask_timeout
 * passes.  The command runs in the node's transaction, not the caller's.
 * dc_tell does the same but returns as soon as the owner has taken the
 * command as its own.
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
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "api.h"
#include "durable_cluster.h"
#include "entity.h"
#include "forward.h"
#include "inbox.h"
#include "jsonb_build.h"
#include "shard_hash.h"
#include "state_table.h"
#include "tenant.h"
#include "user_command.h"

PG_FUNCTION_INFO_V1(dc_send_command);
PG_FUNCTION_INFO_V1(dc_tell);
PG_FUNCTION_INFO_V1(dc_get_state);
PG_FUNCTION_INFO_V1(dc_shard_id);
PG_FUNCTION_INFO_V1(dc_java_hashcode_sql);
PG_FUNCTION_INFO_V1(dc_self_address_sql);

/* how long to wait before routing again when no owner is known */
#define ROUTE_RETRY_MS	10

/* how often a waiting caller checks whether its shard moved */
#define REROUTE_CHECK_MS	50

/*
 * Fetch an entity id argument: not NULL, not empty, at most 255 bytes, no
 * control or bidirectional formatting characters.
 */
char *
dc_id_argument(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t;
	int			len;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("%s must not be NULL", what));
	t = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must not be empty", what));
	if (len > DC_MAX_ID_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				errmsg("%s is %d bytes long; the limit is %d bytes",
					   what, len, DC_MAX_ID_BYTES));
	dc_check_text(VARDATA_ANY(t), len, what);
	return text_to_cstring(t);
}

/*
 * Owner of a shard per the shared-memory map (inbox.h): a node slot of
 * this server, DC_OWNER_NONE, or a remote server, whose address is then
 * copied to address.
 */
static int
route(const char *mall_id, const char *user_id, int *shard, int *nshards, char *address)
{
	int			owner = DC_OWNER_NONE;

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	*nshards = dc_shared->number_of_shards;
	LWLockRelease(dc_shared->map_lock);
	if (*nshards == 0)
		return -1;

	*shard = dc_entity_shard(mall_id, user_id, *nshards);

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (dc_shared->number_of_shards == *nshards)
		owner = dc_shared->owner[*shard];
	if (owner < DC_OWNER_NONE)
		strlcpy(address, dc_shared->remote[DC_REMOTE_INDEX(owner)], DC_ADDRESS_BYTES);
	LWLockRelease(dc_shared->map_lock);

	/* a node that is not running cannot take the command now */
	if (owner >= 0 && dc_shared->nodes[owner].pid == 0)
		owner = DC_OWNER_NONE;
	return owner;
}

static long
ms_until(TimestampTz deadline)
{
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
}

static void
sleep_ms(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(ms, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Hand a validated command to the owner of its shard and wait for the reply.
 * The slot is given up on any error, including a cancel while waiting, so
 * nothing is left behind in shared memory.
 */
Jsonb *
dc_ask(const char *mall_id, const char *user_id, const DcCommand *cmd, bool tell)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   dc_ask_timeout_ms);
	volatile int slot = -1;
	Jsonb	   *result = NULL;
	bool		told = false;
	MemoryContext cxt = CurrentMemoryContext;

	/* the handler runs for a node, which would wait for itself */
	if (dc_in_command_handler)
		ereport(ERROR,
				errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				errmsg("a command handler cannot send commands"),
				errhint("A handler only returns its entity's new state."));

	PG_TRY();
	{
		while (result == NULL && !told)
		{
			DcRequestSlot *s;
			int			shard = -1;
			int			nshards;
			int			owner;
			char		address[DC_ADDRESS_BYTES];
			bool		rerouted = false;

			if (slot < 0 && (slot = dc_slot_acquire()) < 0)
			{
				if (ms_until(deadline) <= 0)
					ereport(ERROR,
							errcode(ERRCODE_INSUFFICIENT_RESOURCES),
							errmsg("no free durable_cluster request slot within ask_timeout"));
				sleep_ms(ROUTE_RETRY_MS);
				continue;
			}

			owner = route(mall_id, user_id, &shard, &nshards, address);
			if (owner < DC_OWNER_NONE)
			{
				bool		moved;

				/* a node of another server owns it: that server queues it */
				dc_slot_release(slot);
				slot = -1;
				if (dc_serving_forward)
				{
					/* forwarded here: never further (no return inside PG_TRY) */
					result = dc_moved_reply();
					continue;
				}
				result = dc_forward(address, NULL, mall_id, user_id, cmd, tell, deadline, &moved);
				told = tell && !moved;
				if (moved && ms_until(deadline) <= 0)
					ereport(ERROR,
							errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							errmsg("no node of another server took the command within ask_timeout (%d ms); it was not applied",
								   dc_ask_timeout_ms),
							errdetail("Shard %d was last owned by a node of %s, which could not be reached or no longer owned it.",
									  shard, address),
							errhint("A failover takes up to durable_cluster.failure_timeout plus one heartbeat_interval; an ask_timeout longer than that rides through it."));
				if (moved)
					sleep_ms(ROUTE_RETRY_MS);
				continue;
			}
			if (owner < 0)
			{
				if (ms_until(deadline) <= 0)
				{
					if (nshards == 0)
						ereport(ERROR,
								errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								errmsg("no durable_cluster node is serving: the shard map is not loaded"),
								errhint("Check that durable_cluster.nodes > 0 and that the nodes run (SELECT * FROM dc_members)."));
					ereport(ERROR,
							errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							errmsg("no live durable_cluster node owns shard %d", shard),
							errdetail("Waited durable_cluster.ask_timeout (%d ms).", dc_ask_timeout_ms),
							errhint("Check the nodes with SELECT * FROM dc_members."));
				}
				sleep_ms(ROUTE_RETRY_MS);
				continue;
			}

			s = &dc_shared->slots[slot];
			s->shard = shard;
			s->number_of_shards = nshards;
			strlcpy(s->mall_id, mall_id, sizeof(s->mall_id));
			strlcpy(s->user_id, user_id, sizeof(s->user_id));
			s->command = *cmd;
			s->tell = tell;
			dc_slot_enqueue(slot, owner);

			while (dc_slot_state(slot) != DC_SLOT_DONE &&
				   !(tell && dc_slot_accepted(slot)))
			{
				long		left = ms_until(deadline);

				if (left <= 0)
				{
					char		name[NAMEDATALEN];
					DcSlotState was = dc_slot_abandon(slot);

					slot = -1;
					dc_node_name(owner, name, sizeof(name));
					if (was == DC_SLOT_QUEUED)
						ereport(ERROR,
								errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								errmsg("no node took the command within ask_timeout (%d ms); it was not applied",
									   dc_ask_timeout_ms),
								errdetail("It was waiting in the inbox of %s, owner of shard %d.",
										  name, shard),
								errhint("A failover takes up to durable_cluster.failure_timeout plus one heartbeat_interval; an ask_timeout longer than that rides through it."));
					ereport(ERROR,
							errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
							errmsg("no reply from %s within ask_timeout (%d ms); the command may or may not have been applied",
								   name, dc_ask_timeout_ms),
							errhint(DC_RETRY_HINT));
				}
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 Min(left, REROUTE_CHECK_MS), PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();

				/*
				 * If the shard moved while the command still waits in the old
				 * owner's inbox (that node may be paused or gone), take it
				 * back and send it to the new owner.
				 */
				if (route(mall_id, user_id, &shard, &nshards, address) != owner &&
					dc_slot_reclaim(slot))
				{
					rerouted = true;
					break;
				}
			}
			if (rerouted)
				continue;
			if (tell && dc_slot_detach(slot))
			{
				/* the owner has it, and frees the slot when it is done */
				slot = -1;
				told = true;
				continue;
			}

			switch (s->reply_kind)
			{
				case DC_REPLY_OK:
					result = palloc(s->reply_len);
					memcpy(result, s->reply, s->reply_len);
					break;
				case DC_REPLY_ERROR:
					{
						char	   *msg = pnstrdup(s->reply, s->reply_len);
						int			sqlstate = s->reply_sqlstate;

						dc_slot_release(slot);
						slot = -1;
						ereport(ERROR, errcode(sqlstate), errmsg("%s", msg));
					}
					break;
				case DC_REPLY_MOVED:
					/* the shard changed hands: route again with the new map */
					dc_slot_release(slot);
					slot = -1;
					sleep_ms(1);
					break;
			}
		}
		if (slot >= 0)
			dc_slot_release(slot);
		slot = -1;
	}
	PG_CATCH();
	{
		DcSlotState was = slot >= 0 ? dc_slot_abandon(slot) : DC_SLOT_FREE;

		/*
		 * Cancelled (statement_timeout, a client's cancel request,
		 * pg_cancel_backend) after a node took the command: it may well be
		 * applied and committed, so plain 57014 would tell the caller
		 * "not done" wrongly.  Before that, it left the inbox unapplied
		 * above, and 57014 is the truth.
		 */
		if (was == DC_SLOT_TAKEN || was == DC_SLOT_DONE)
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			{
				FlushErrorState();
				ereport(ERROR,
						errcode(ERRCODE_T_R_STATEMENT_COMPLETION_UNKNOWN),
						errmsg("%s after a node had taken the command; it may or may not have been applied",
							   edata->message),
						errhint(DC_RETRY_HINT));
			}
			FreeErrorData(edata);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();

	return result;
}

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
				errhint("Known commands are: login, logout, get_state, update_profile, add_balance, deduct_balance, refund_balance."));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("payload must not be NULL"),
				errhint("Pass '{}' for a command without arguments."));
	dc_command_parse(text_to_cstring(PG_GETARG_TEXT_PP(2)), PG_GETARG_JSONB_P(3), cmd);
	dc_tenant_check(NULL, *mall_id, cmd->name);
}

Datum
dc_send_command(PG_FUNCTION_ARGS)
{
	char	   *mall_id;
	char	   *user_id;
	DcCommand	cmd;

	command_arguments(fcinfo, &mall_id, &user_id, &cmd);
	PG_RETURN_JSONB_P(dc_ask(mall_id, user_id, &cmd, false));
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

	command_arguments(fcinfo, &mall_id, &user_id, &cmd);
	(void) dc_ask(mall_id, user_id, &cmd, true);
	PG_RETURN_VOID();
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
	int			local = DC_OWNER_NONE;
	char		name[NAMEDATALEN];

	LWLockAcquire(dc_shared->map_lock, LW_SHARED);
	if (shard < dc_shared->number_of_shards)
		local = dc_shared->owner[shard];
	LWLockRelease(dc_shared->map_lock);
	if (local >= 0)
	{
		SpinLockAcquire(&dc_shared->mutex);
		memcpy(name, dc_shared->nodes[local].name, NAMEDATALEN);
		SpinLockRelease(&dc_shared->mutex);
		name[NAMEDATALEN - 1] = '\0';
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
	 * The store on another server: the same read there (the function is in
	 * the same schema on every server), for a caller allowed here; the
	 * cluster's role may call it there, in a statement of its own.
	 */
	if (!dc_store_is_here())
	{
		char	   *doc;

		doc = dc_store_value(psprintf("SELECT %s.dc_get_state($1, $2)",
									  quote_identifier(get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid)))),
							 2, (const char *[]) {mall, user});
		if (doc == NULL)
			elog(ERROR, "dc_get_state on the store returned NULL");
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
	{
		LWLockAcquire(dc_shared->map_lock, LW_SHARED);
		n = dc_shared->number_of_shards;
		LWLockRelease(dc_shared->map_lock);
	}
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
