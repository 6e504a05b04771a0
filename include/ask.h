/*-------------------------------------------------------------------------
 *
 * ask.h
 *	  The caller's side of commands (ask.c): hand them to the owners of
 *	  their shards and wait for the replies, one or many at a time.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_ASK_H
#define DC_ASK_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "entity.h"
#include "tenant.h"

/* how many commands one call may send at once (dc_send_commands) */
#define DC_MAX_BULK_COMMANDS	1000

/* how many of them are in flight at a time, at most */
#define DC_ASK_WINDOW			128

typedef struct DcAskOptions
{
	int			timeout_ms;		/* each command's ask_timeout */
	bool		tell;			/* done once the owner took it (dc_tell) */
	bool		may_forward;	/* false for a command another server forwarded:
								 * answer {"moved": true} rather than hand it on */
	const DcRoles *roles;		/* dc_ask: the roles its command acts as, NULL =
								 * this session's (tenant.h) */
} DcAskOptions;

typedef enum DcAskPhase
{
	DC_ASK_WAITING,				/* behind an earlier command of its entity */
	DC_ASK_ROUTING,				/* to be queued to its shard's owner */
	DC_ASK_QUEUED,				/* in a request slot: a node has it or will */
	DC_ASK_DONE					/* answered */
} DcAskPhase;

/* One command of a call and, once answered, its outcome. */
typedef struct DcAsk
{
	/* the command, validated: set by the caller */
	const char *mall_id;
	const char *user_id;
	const DcCommand *cmd;
	const DcRoles *roles;		/* whom it acts as, NULL = this session's roles;
								 * another server checks them (forward.c) */

	/* the outcome: a reply, or an error (sqlstate != 0); neither for a tell */
	Jsonb	   *reply;
	int			sqlstate;
	char	   *message;
	char	   *detail;			/* may be NULL */
	char	   *hint;			/* may be NULL */

	/* progress, ask.c's own */
	DcAskPhase	phase;
	int			next_same;		/* the entity's next command in the call, -1 = none */
	TimestampTz deadline;		/* ask_timeout, from when it was first routed */
	TimestampTz not_before;		/* ROUTING: do not route again before */
	int			slot;			/* the request slot held, -1 = none */
	int			owner;			/* QUEUED: the node whose inbox it went to */
	int			shard;
} DcAsk;

/*
 * Send n commands and wait until every one is answered.  Commands to one
 * entity are sent one after another, in array order; the others go to
 * their owners concurrently, at most DC_ASK_WINDOW at a time.  Errors of
 * single commands are their outcomes; a cancel fails the call.
 */
extern void dc_ask_many(DcAsk *asks, int n, const DcAskOptions *options);

/*
 * One command: its reply, NULL for a tell the owner took; its error is
 * raised.  options NULL: ask_timeout, wait for the reply, may forward.
 */
extern Jsonb *dc_ask(const char *mall_id, const char *user_id, const DcCommand *cmd,
					 const DcAskOptions *options);

#endif							/* DC_ASK_H */
