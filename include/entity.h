/*-------------------------------------------------------------------------
 *
 * entity.h
 *	  The user entity's state and the built-in commands, as plain functions
 *	  from (state, command) to (new state, result).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_ENTITY_H
#define DC_ENTITY_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/jsonb.h"

#include "settings.h"

/* 64 characters of at most 4 bytes each, plus the terminator */
#define DC_MAX_NICKNAME_CHARS	64
#define DC_NICKNAME_BUFSIZE		(DC_MAX_NICKNAME_CHARS * 4 + 1)

/* amounts are exact: kept in hundredths (cents) */
#define DC_MAX_AMOUNT_CENTS		INT64CONST(100000000000000)	/* 10^12 units */

typedef struct DcEntityState
{
	bool		logged_in;
	int64		login_count;
	bool		has_nickname;
	char		nickname[DC_NICKNAME_BUFSIZE];
	int64		balance_cents;
	bool		has_event_time;
	TimestampTz last_event_time;
	Jsonb	   *extra;			/* keys user-defined commands added, or NULL */
	int64		revision;		/* 0 = never stored */
} DcEntityState;

/*
 * A state document, with the ids and everything else, must leave room for
 * the rest of a reply in a request slot (shared_memory.h, DC_REPLY_BYTES).
 */
#define DC_MAX_STATE_BYTES		3584

/* command ids of the steps of a transfer (saga.c); clients may not use them */
#define DC_SAGA_ID_PREFIX		"saga-"
/* command ids made for commands sent at commit (at_commit.c); likewise */
#define DC_AT_COMMIT_ID_PREFIX	"commit-"

/*
 * Every command's payload, as jsonb: a user-defined command's travels in
 * the request slot, and any may wait in pending_commands.
 */
#define DC_MAX_PAYLOAD_BYTES	2048

typedef enum DcCommandKind
{
	DC_CMD_LOGIN,
	DC_CMD_LOGOUT,
	DC_CMD_GET_STATE,
	DC_CMD_UPDATE_PROFILE,
	DC_CMD_ADD_BALANCE,
	DC_CMD_DEDUCT_BALANCE,
	DC_CMD_REFUND_BALANCE,
	DC_CMD_USER					/* registered with dc_register_command */
} DcCommandKind;

/* A validated command, as it travels from the caller to the node. */
typedef struct DcCommand
{
	DcCommandKind kind;
	int64		amount_cents;	/* balance commands */
	char		nickname[DC_NICKNAME_BUFSIZE];	/* update_profile */
	char		command_id[DC_MAX_ID_BYTES + 1];	/* "" = none (see command_log) */
	char		name[NAMEDATALEN];	/* the command's name */
	bool		saga_step;		/* a step of a transfer (saga.c) */
	uint32		payload_len;	/* a Jsonb: DC_CMD_USER's payload, or */
	char		payload[DC_MAX_PAYLOAD_BYTES];	/* a saga step's saga record */
} DcCommand;

typedef enum DcOutcome
{
	DC_OUTCOME_CHANGED,			/* state changed: must be stored */
	DC_OUTCOME_UNCHANGED,		/* read only */
	DC_OUTCOME_REJECTED			/* domain rejection: a reply, not an error */
} DcOutcome;

extern void dc_entity_init(DcEntityState *state);

/*
 * Validate a command's payload; ereport(ERROR) on bad input.  A name that
 * is not built in is taken for a registered command (whether one is, is
 * user_command.c's to say: dc_parse_client_command).
 */
extern void dc_command_parse(const char *name, Jsonb *payload, DcCommand *cmd);
extern const char *dc_builtin_command_list(void);

/*
 * Apply a command to *state in place.  *label is the reply's "result" for a
 * success or its "error" for a rejection.
 */
extern DcOutcome dc_command_apply(const DcCommand *cmd, DcEntityState *state,
								  TimestampTz now, const char **label);

extern Jsonb *dc_entity_to_jsonb(const char *mall_id, const char *user_id,
								 const DcEntityState *state);
extern void dc_entity_from_jsonb(Jsonb *doc, int64 revision, DcEntityState *state);
extern Jsonb *dc_entity_canonical(Jsonb *doc, const char *mall_id, const char *user_id,
								  int64 revision);
extern void dc_entity_check_doc(Jsonb *doc, Jsonb *before, const char *command);
extern bool dc_command_is_builtin(const char *name);
extern void dc_check_text(const char *s, int len, const char *what);
/* a user's string, quoted, escaped and cut short, for messages */
extern char *dc_quote_for_message(const char *s);

/*
 * An entity id: not empty, at most DC_MAX_ID_BYTES, no control, format or
 * invisible characters (dc_check_text); as a C string.  The second takes it
 * from argument argno of an SQL function, which must not be NULL.
 */
extern char *dc_id_check(const char *id, int len, const char *what);
extern char *dc_id_argument(FunctionCallInfo fcinfo, int argno, const char *what);

/* 22004 unless every argument of SQL function what but optional (-1: none) is given */
extern void dc_require_arguments(FunctionCallInfo fcinfo, const char *what, int optional);
/* a balance's text ("100.50", "100.5", "1e2"): its cents, if it is one */
extern bool dc_money_parse(const char *text, int64 *cents);

extern Jsonb *dc_command_request(const DcCommand *cmd);
extern Jsonb *dc_command_payload(const DcCommand *cmd);
extern Jsonb *dc_build_reply(bool ok, const char *label, Jsonb *state_doc,
							 int64 revision, int shard, const char *node_name);

#endif							/* DC_ENTITY_H */
