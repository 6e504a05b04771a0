/*-------------------------------------------------------------------------
 *
 * forward.c
 *	  Commands forwarded to the server whose node owns their shard.
 *
 * In a cluster of several servers, each server's shard map names, for a
 * shard owned elsewhere, the owner's server (shared_memory.h).  dc_send_command
 * and dc_tell then hand the validated command, as it would sit in a
 * request slot, to durable_cluster.forward() on that server (api.c), which
 * queues it to its node and returns the reply.  A forwarded command is never
 * forwarded again: if the shard moved on meanwhile, forward() says so and
 * the caller routes it anew with its own map, until ask_timeout.  The
 * sessions to other servers are remote.c's.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "forward.h"
#include "jsonb_build.h"
#include "remote.h"

/*
 * Hand a validated command of roles (NULL: this session's, tenant.h) to the
 * server at address, whose node owns its shard, and return the reply; NULL
 * for a tell that node took.  *moved
 * when that server's map no longer names one of its nodes the owner, or
 * when that server cannot be reached (it may be down: its shards are
 * about to move), in which case nothing was sent.
 */
Jsonb *
dc_forward(const char *address, const DcRoles *roles, const char *mall_id, const char *user_id,
		   const DcCommand *cmd, bool tell, TimestampTz deadline, bool *moved)
{
	DcRoles		session;
	char	   *why;
	const char *values[9];
	PGresult   *res;
	Jsonb	   *reply = NULL;

	/*
	 * The command as a client sends it, the transfer's record for a saga
	 * step, and the roles that sent it, whose malls that server checks too:
	 * one role in the format every release reads, several in the one that
	 * lists them.
	 */
	if (roles == NULL)
	{
		dc_session_roles(&session);
		roles = &session;
	}
	if (roles->n == 1)
	{
		values[0] = CppAsString2(DC_FORWARD_FORMAT_ONE_ROLE);
		values[1] = roles->names[0];
	}
	else
	{
		values[0] = CppAsString2(DC_FORWARD_FORMAT_ROLES);
		values[1] = dc_roles_text(roles);
	}
	values[2] = mall_id;
	values[3] = user_id;
	values[4] = cmd->name;
	values[5] = dc_jsonb_doc_text(dc_command_payload(cmd));
	values[6] = cmd->saga_step ? dc_jsonb_doc_text((Jsonb *) cmd->payload) : NULL;
	values[7] = tell ? "t" : "f";
	values[8] = psprintf("%ld", Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																	 deadline), 1));

	/* a second more than the other server's own wait, to hear how it ended */
	res = dc_remote_exec(address,
						 "SELECT durable_cluster.forward($1::integer, $2, $3, $4, $5, $6::jsonb,"
						 "                               $7::jsonb, $8::boolean, $9::integer)",
						 9, values, deadline, TimestampTzPlusMilliseconds(deadline, 1000),
						 true, &why);
	*moved = true;
	if (res == NULL)
	{
		ereport(DEBUG1, errmsg("could not reach %s: %s", address, why));
		return NULL;
	}
	*moved = false;
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
	{
		reply = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												   CStringGetDatum(PQgetvalue(res, 0, 0))));
		*moved = getKeyJsonValueFromContainer(&reply->root, "moved", 5, NULL) != NULL;
	}
	PQclear(res);
	return *moved ? NULL : reply;
}

/* The reply durable_cluster.forward() gives when the shard is not here. */
Jsonb *
dc_moved_reply(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"moved\": true}")));
}
