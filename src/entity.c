/*-------------------------------------------------------------------------
 *
 * entity.c
 *	  The user entity: its state, the built-in commands and their validation,
 *	  and the jsonb documents it is stored and replied as.
 *
 * Command handlers are plain functions from (state, command) to (new state,
 * result), with no I/O: the node decides when state is loaded and stored.
 * Validation runs in the caller's backend before anything is queued, so bad
 * input raises an error in the caller's session and never reaches a node.
 *
 * Money is exact: amounts and balances are kept as int64 hundredths and
 * shown as strings with two decimals ("100.50"), which every client's JSON
 * parser keeps as written; never as floating point.  Amounts come in as a
 * JSON number or a string holding one.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "entity.h"
#include "jsonb_build.h"

typedef enum PayloadNeed
{
	NEEDS_NOTHING,
	NEEDS_AMOUNT,
	NEEDS_NICKNAME
} PayloadNeed;

typedef struct CommandSpec
{
	const char *name;
	DcCommandKind kind;
	PayloadNeed need;
} CommandSpec;

static const CommandSpec command_specs[] = {
	{"login", DC_CMD_LOGIN, NEEDS_NOTHING},
	{"logout", DC_CMD_LOGOUT, NEEDS_NOTHING},
	{"get_state", DC_CMD_GET_STATE, NEEDS_NOTHING},
	{"update_profile", DC_CMD_UPDATE_PROFILE, NEEDS_NICKNAME},
	{"add_balance", DC_CMD_ADD_BALANCE, NEEDS_AMOUNT},
	{"deduct_balance", DC_CMD_DEDUCT_BALANCE, NEEDS_AMOUNT},
	{"refund_balance", DC_CMD_REFUND_BALANCE, NEEDS_AMOUNT},
};


/* digits, in cents, of the largest amount (10^12) and balance (10^16 - 0.01) */
#define DC_AMOUNT_DIGITS		15
#define DC_BALANCE_DIGITS		18
#define DC_MAX_BALANCE_CENTS	INT64CONST(999999999999999999)

typedef enum CentsParse
{
	CENTS_OK,
	CENTS_SYNTAX,
	CENTS_TOO_PRECISE,
	CENTS_TOO_LARGE,
	CENTS_NEGATIVE
} CentsParse;

/*
 * Parse a number written as JSON writes one (RFC 8259): an optional minus,
 * an integer part without leading zeros, an optional fraction and an
 * optional exponent: "100.50", "-3", "1.5e2".  Nothing else: no spaces, no
 * plus sign, no ".5", no "5.".  The value is read as M * 10^E with M the
 * significant digits; zeros are deferred so that "1.000" or "1e2" are
 * exact and no digit string can overflow.  A negative value is
 * CENTS_NEGATIVE, whatever its size; values of more than max_digits digits
 * (in cents) are too large.
 */
static CentsParse
parse_cents(const char *s, int max_digits, int64 *cents)
{
	char		m[20];			/* significant digits, at most 19 kept */
	int			mlen = 0;		/* number of significant digits */
	int			zeros = 0;		/* zeros not yet appended to m */
	int			e = 0;
	int			shift;
	bool		negative = false;
	bool		in_fraction = false;

	if (*s == '-')
	{
		negative = true;
		s++;
	}
	/* JSON's integer part: "0", or digits that do not start with 0 */
	if (!isdigit((unsigned char) *s) || (s[0] == '0' && isdigit((unsigned char) s[1])))
		return CENTS_SYNTAX;
	for (;; s++)
	{
		if (*s == '.' && !in_fraction)
		{
			in_fraction = true;
			if (!isdigit((unsigned char) s[1]))
				return CENTS_SYNTAX;
			continue;
		}
		if (!isdigit((unsigned char) *s))
			break;
		if (in_fraction)
			e--;
		if (*s == '0')
		{
			zeros++;
			continue;
		}
		/* a non-zero digit: the deferred zeros are significant after all */
		for (; zeros > 0; zeros--)
		{
			if (mlen > 0 && mlen < (int) sizeof(m))
				m[mlen] = '0';
			if (mlen > 0)
				mlen++;
		}
		if (mlen < (int) sizeof(m))
			m[mlen] = *s;
		mlen++;
	}
	e += zeros;
	if (*s == 'e' || *s == 'E')
	{
		int			sign = 1;
		int			x = 0;

		s++;
		if (*s == '+' || *s == '-')
			sign = (*s++ == '-') ? -1 : 1;
		if (!isdigit((unsigned char) *s))
			return CENTS_SYNTAX;
		for (; isdigit((unsigned char) *s); s++)
			x = Min(x * 10 + (*s - '0'), 100000);
		e += sign * x;
	}
	if (*s != '\0')
		return CENTS_SYNTAX;

	if (mlen == 0)
	{
		*cents = 0;
		return CENTS_OK;
	}
	if (negative)
		return CENTS_NEGATIVE;
	shift = e + 2;
	if (shift < 0)
		return CENTS_TOO_PRECISE;
	if (mlen + shift > max_digits)
		return CENTS_TOO_LARGE;

	*cents = 0;
	for (int i = 0; i < mlen; i++)
		*cents = *cents * 10 + (m[i] - '0');
	for (int i = 0; i < shift; i++)
		*cents *= 10;
	return CENTS_OK;
}

static char *
jsonb_string_dup(const JsonbValue *v)
{
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static JsonbValue *
payload_key(Jsonb *payload, const char *key)
{
	return getKeyJsonValueFromContainer(&payload->root, key, strlen(key), NULL);
}

/*
 * The text of a money value, given as a JSON number or as a string: NULL
 * for any other JSON type.
 */
static char *
money_value_text(const JsonbValue *v)
{
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v->val.numeric)));
	if (v->type == jbvString)
		return jsonb_string_dup(v);
	return NULL;
}

/*
 * A balance: a number in JSON's grammar, from 0 to 9999999999999999.99,
 * with at most two decimals.  False if text is anything else.
 */
bool
dc_money_parse(const char *text, int64 *cents)
{
	return parse_cents(text, DC_BALANCE_DIGITS, cents) == CENTS_OK && *cents >= 0;
}

/* what every rejected amount's error says: the forms that are accepted */
#define AMOUNT_HINT \
	"Send the amount as a string with two decimals, such as \"100.50\", or as a JSON number with at most two decimals, such as 100.5; in JavaScript, a value computed in floating point (0.1 + 0.2) must be formatted first (x.toFixed(2))."

static int64
parse_amount(const char *command, Jsonb *payload)
{
	JsonbValue *v = payload_key(payload, "amount");
	char	   *text;
	int64		cents;

	if (v == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("command \"%s\" needs an \"amount\" in its payload", command),
				errhint("Pass a payload such as '{\"amount\": \"100.50\"}'."));
	if ((text = money_value_text(v)) == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"amount\" of command \"%s\" must be a number or a numeric string", command),
				errhint(AMOUNT_HINT));

	switch (parse_cents(text, DC_AMOUNT_DIGITS, &cents))
	{
		case CENTS_SYNTAX:
			ereport(ERROR,
					errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					errmsg("\"amount\" of command \"%s\" is not a number: %s", command,
						   dc_quote_for_message(text)),
					errdetail("An amount is written as JSON writes numbers: no spaces, no plus sign, digits on both sides of a decimal point."),
					errhint(AMOUNT_HINT));
			break;
		case CENTS_NEGATIVE:
			cents = -1;
			break;
		case CENTS_TOO_PRECISE:
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("\"amount\" %s has more than 2 decimal places", dc_quote_for_message(text)),
					errhint(AMOUNT_HINT));
			break;
		case CENTS_TOO_LARGE:
			cents = DC_MAX_AMOUNT_CENTS + 1;
			break;
		case CENTS_OK:
			break;
	}
	if (cents <= 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"amount\" must be greater than zero, got %s", dc_quote_for_message(text)),
				errhint(AMOUNT_HINT));
	if (cents > DC_MAX_AMOUNT_CENTS)
		ereport(ERROR,
				errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				errmsg("\"amount\" %s is larger than the maximum of 1000000000000", dc_quote_for_message(text)),
				errhint(AMOUNT_HINT));
	return cents;
}

/* command id prefixes of the extension's own commands, and whose they are */
static const struct
{
	const char *prefix;
	const char *owner;
}			reserved_ids[] = {
	{DC_SAGA_ID_PREFIX, "the steps of dc.transfer"},
	{DC_AT_COMMIT_ID_PREFIX, "commands sent with dc.send_command_at_commit"},
};

/* The optional "command_id" of any command: a string of 1 to 255 bytes. */
static void
parse_command_id(const char *command, Jsonb *payload, char *out)
{
	JsonbValue *v = payload_key(payload, "command_id");

	if (v == NULL)
		return;
	if (v->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"command_id\" of command \"%s\" must be a string", command));
	if (v->val.string.len == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"command_id\" of command \"%s\" must not be empty", command));
	if (v->val.string.len > DC_MAX_ID_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				errmsg("\"command_id\" of command \"%s\" is %d bytes long; the limit is %d bytes",
					   command, v->val.string.len, DC_MAX_ID_BYTES));
	dc_check_text(v->val.string.val, v->val.string.len, "command_id");
	/*
	 * A client could otherwise answer a transfer's step, or a command sent
	 * at commit, in advance.
	 */
	for (int i = 0; i < lengthof(reserved_ids); i++)
	{
		size_t		len = strlen(reserved_ids[i].prefix);

		if (v->val.string.len >= len && memcmp(v->val.string.val, reserved_ids[i].prefix, len) == 0)
			ereport(ERROR,
					errcode(ERRCODE_RESERVED_NAME),
					errmsg("command ids starting with \"%s\" are reserved for %s",
						   reserved_ids[i].prefix, reserved_ids[i].owner));
	}
	memcpy(out, v->val.string.val, v->val.string.len);
	out[v->val.string.len] = '\0';
}

static void
parse_nickname(const char *command, Jsonb *payload, char *out)
{
	JsonbValue *v = payload_key(payload, "nickname");
	int			nchars;

	if (v == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("command \"%s\" needs a \"nickname\" in its payload", command),
				errhint("Pass a payload such as '{\"nickname\": \"alice\"}'."));
	if (v->type != jbvString)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"nickname\" must be a string"));
	if (v->val.string.len == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("\"nickname\" must not be empty"));
	dc_check_text(v->val.string.val, v->val.string.len, "nickname");
	nchars = pg_mbstrlen_with_len(v->val.string.val, v->val.string.len);
	if (nchars > DC_MAX_NICKNAME_CHARS || v->val.string.len >= DC_NICKNAME_BUFSIZE)
		ereport(ERROR,
				errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				errmsg("\"nickname\" is %d characters long; the limit is %d",
					   nchars, DC_MAX_NICKNAME_CHARS));
	memcpy(out, v->val.string.val, v->val.string.len);
	out[v->val.string.len] = '\0';
}

/*
 * Characters that make a name look other than it is, in logs, tools and
 * screens, or that do not show at all: Unicode's format characters (Cf,
 * the bidirectional marks and zero-width joiners among them), the line
 * and paragraph separators (Zl, Zp), the other default-ignorable code
 * points but the variation selectors (which emoji need), and the blank
 * fillers (Hangul fillers, the blank Braille pattern).  As of Unicode 15,
 * sorted, inclusive.
 */
static const struct
{
	pg_wchar	first;
	pg_wchar	last;
}			invisible_ranges[] = {
	{0x00AD, 0x00AD}, {0x034F, 0x034F}, {0x0600, 0x0605}, {0x061C, 0x061C},
	{0x06DD, 0x06DD}, {0x070F, 0x070F}, {0x0890, 0x0891}, {0x08E2, 0x08E2},
	{0x115F, 0x1160}, {0x17B4, 0x17B5}, {0x180B, 0x180F}, {0x200B, 0x200F},
	{0x2028, 0x202E}, {0x2060, 0x206F}, {0x2800, 0x2800}, {0x3164, 0x3164},
	{0xFEFF, 0xFEFF}, {0xFFA0, 0xFFA0}, {0xFFF0, 0xFFFB}, {0x110BD, 0x110BD},
	{0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A},
	{0xE0000, 0xE00FF}, {0xE01F0, 0xE0FFF},
};

/* A control character (C0, DEL, C1), or one of invisible_ranges. */
static bool
is_hidden_char(pg_wchar ch, bool utf8)
{
	int			lo = 0;
	int			hi = lengthof(invisible_ranges) - 1;

	if (ch < 0x20 || ch == 0x7F)
		return true;
	if (!utf8 || ch < 0x80)
		return false;
	if (ch <= 0x9F)
		return true;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (ch < invisible_ranges[mid].first)
			hi = mid - 1;
		else if (ch > invisible_ranges[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/*
 * The character at s (of at most len bytes) and its length in bytes; in a
 * UTF-8 database a multibyte one as its code point.  0 bytes if it is cut
 * short (the encoding check rejects it).
 */
static int
next_char(const char *s, int len, bool utf8, pg_wchar *ch)
{
	unsigned char c = (unsigned char) *s;
	int			step;

	*ch = c;
	if (!utf8 || c < 0x80)
		return 1;
	step = pg_utf_mblen((const unsigned char *) s);
	if (step > len)
		return 0;
	*ch = utf8_to_unicode((const unsigned char *) s);
	return step;
}

/*
 * A name with a hidden character (is_hidden_char) is rejected, not
 * cleaned.  what names the value in the message.
 */
void
dc_check_text(const char *s, int len, const char *what)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	for (int i = 0; i < len;)
	{
		pg_wchar	ch;
		int			step = next_char(s + i, len - i, utf8, &ch);

		if (step == 0)
			break;
		if (is_hidden_char(ch, utf8))
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("%s must not contain control, format or invisible characters",
						   what),
					errdetail("Character U+%04X is at byte %d.", (unsigned int) ch, i + 1));
		i += step;
	}
}

/* how many characters of a user's string a message shows */
#define QUOTED_CHARS	64

/*
 * A string a user gave, for an error message or the log: in double
 * quotes, with quotes, backslashes and hidden characters escaped (\uXXXX)
 * and cut after QUOTED_CHARS characters ("..." then follows), so that it
 * can neither forge a line of the log nor hide what it is.
 */
char *
dc_quote_for_message(const char *s)
{
	StringInfoData buf;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	int			len = strlen(s);
	int			nchars = 0;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '"');
	for (int i = 0; i < len; nchars++)
	{
		pg_wchar	ch;
		int			step = next_char(s + i, len - i, utf8, &ch);

		if (nchars == QUOTED_CHARS || step == 0)
		{
			appendStringInfoString(&buf, "...");
			break;
		}
		if (ch == '"' || ch == '\\')
			appendStringInfo(&buf, "\\%c", (char) ch);
		else if (is_hidden_char(ch, utf8))
			appendStringInfo(&buf, "\\u%04X", (unsigned int) ch);
		else
			appendBinaryStringInfo(&buf, s + i, step);
		i += step;
	}
	appendStringInfoChar(&buf, '"');
	return buf.data;
}

/*
 * An entity id: not empty, at most 255 bytes, no control, format or
 * invisible characters.  Returns it as a C string.
 */
char *
dc_id_check(const char *id, int len, const char *what)
{
	if (len == 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("%s must not be empty", what));
	if (len > DC_MAX_ID_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				errmsg("%s is %d bytes long; the limit is %d bytes",
					   what, len, DC_MAX_ID_BYTES));
	dc_check_text(id, len, what);
	return pnstrdup(id, len);
}

/* Fetch an entity id argument: not NULL, and as id_check wants it. */
char *
dc_id_argument(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("%s must not be NULL", what));
	t = PG_GETARG_TEXT_PP(argno);
	return dc_id_check(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), what);
}

/*
 * Every argument of the SQL function what (for the message) is given, but
 * argument optional (-1: none).
 */
void
dc_require_arguments(FunctionCallInfo fcinfo, const char *what, int optional)
{
	for (int i = 0; i < PG_NARGS(); i++)
		if (PG_ARGISNULL(i) && i != optional)
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("argument %d of %s is NULL", i + 1, what));
}

static const CommandSpec *
builtin_spec(const char *name)
{
	for (int i = 0; i < lengthof(command_specs); i++)
		if (strcmp(command_specs[i].name, name) == 0)
			return &command_specs[i];
	return NULL;
}

bool
dc_command_is_builtin(const char *name)
{
	return builtin_spec(name) != NULL;
}

/* "login, logout, ...": the built-in commands, for messages */
const char *
dc_builtin_command_list(void)
{
	static char list[256];

	if (list[0] == '\0')
		for (int i = 0; i < lengthof(command_specs); i++)
		{
			if (i > 0)
				strlcat(list, ", ", sizeof(list));
			strlcat(list, command_specs[i].name, sizeof(list));
		}
	return list;
}

void
dc_command_parse(const char *name, Jsonb *payload, DcCommand *cmd)
{
	const CommandSpec *spec = builtin_spec(name);

	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
	{
		JsonbValue	scalar;
		bool		is_string = JB_ROOT_IS_SCALAR(payload) &&
			JsonbExtractScalar(&payload->root, &scalar) && scalar.type == jbvString;

		/* the usual driver mistakes get a hint of their own */
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("payload of command \"%s\" must be a JSON object, not %s", name,
					   is_string ? "a string" : JB_ROOT_IS_SCALAR(payload) ? "a scalar" : "an array"),
				is_string
				? errhint("The payload was probably encoded twice: pass the object itself where the driver encodes JSON (postgres.js), or JSON text where it does not (node-postgres, JDBC, psycopg2).")
				: errhint("Pass '{}' for a command without arguments."));
	}

	/*
	 * Every payload is bounded, the built-in commands' too: one may wait,
	 * sent at commit, in a table every tenant's commands go through.
	 */
	if (VARSIZE(payload) > DC_MAX_PAYLOAD_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("payload of command \"%s\" is %zu bytes long; the limit is %d bytes",
					   name, (size_t) VARSIZE(payload), DC_MAX_PAYLOAD_BYTES));

	/* all of it: a forwarded command travels whole (forward.c) */
	memset(cmd, 0, sizeof(*cmd));
	parse_command_id(name, payload, cmd->command_id);
	if (spec == NULL)
	{
		cmd->kind = DC_CMD_USER;
		strlcpy(cmd->name, name, sizeof(cmd->name));
		cmd->payload_len = VARSIZE(payload);
		memcpy(cmd->payload, payload, VARSIZE(payload));
		return;
	}
	cmd->kind = spec->kind;
	strlcpy(cmd->name, spec->name, sizeof(cmd->name));
	if (spec->need == NEEDS_AMOUNT)
		cmd->amount_cents = parse_amount(name, payload);
	else if (spec->need == NEEDS_NICKNAME)
		parse_nickname(name, payload, cmd->nickname);
}

void
dc_entity_init(DcEntityState *state)
{
	memset(state, 0, sizeof(*state));
}

DcOutcome
dc_command_apply(const DcCommand *cmd, DcEntityState *state,
				 TimestampTz now, const char **label)
{
	int64		balance;

	switch (cmd->kind)
	{
		case DC_CMD_LOGIN:
			state->logged_in = true;
			state->login_count++;
			*label = "logged_in";
			break;
		case DC_CMD_LOGOUT:
			state->logged_in = false;
			*label = "logged_out";
			break;
		case DC_CMD_GET_STATE:
			*label = "state";
			return DC_OUTCOME_UNCHANGED;
		case DC_CMD_UPDATE_PROFILE:
			state->has_nickname = true;
			strlcpy(state->nickname, cmd->nickname, sizeof(state->nickname));
			*label = "profile_updated";
			break;
		case DC_CMD_ADD_BALANCE:
		case DC_CMD_REFUND_BALANCE:
			if (pg_add_s64_overflow(state->balance_cents, cmd->amount_cents, &balance) ||
				balance > DC_MAX_BALANCE_CENTS)
			{
				*label = "balance_out_of_range";
				return DC_OUTCOME_REJECTED;
			}
			state->balance_cents = balance;
			*label = cmd->kind == DC_CMD_ADD_BALANCE ? "balance_added" : "balance_refunded";
			break;
		case DC_CMD_USER:
			elog(ERROR, "registered command \"%s\" is applied by its handler", cmd->name);
			break;
		case DC_CMD_DEDUCT_BALANCE:
			if (state->balance_cents < cmd->amount_cents)
			{
				*label = "insufficient_balance";
				return DC_OUTCOME_REJECTED;
			}
			state->balance_cents -= cmd->amount_cents;
			*label = "balance_deducted";
			break;
	}

	state->has_event_time = true;
	state->last_event_time = now;
	state->revision++;
	return DC_OUTCOME_CHANGED;
}

/* ---- jsonb documents ---- */

Jsonb *
dc_entity_to_jsonb(const char *mall_id, const char *user_id,
				   const DcEntityState *state)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	const int	utc = 0;

	/*
	 * Keys in the order a jsonb object keeps them (shorter first, then
	 * byte by byte): its final sort then finds them sorted.  Unsorted, the
	 * sorts took about 5% of a node's time under load.
	 */
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_money(&ps, "balance", state->balance_cents);
	dc_push_string(&ps, "mall_id", mall_id);
	dc_push_string(&ps, "user_id", user_id);
	dc_push_string(&ps, "nickname", state->has_nickname ? state->nickname : NULL);
	dc_push_bool(&ps, "logged_in", state->logged_in);
	dc_push_int(&ps, "login_count", state->login_count);
	/* in UTC, whatever the session's TimeZone: one document everywhere */
	dc_push_string(&ps, "last_event_time",
				state->has_event_time
				? JsonEncodeDateTime(NULL, TimestampTzGetDatum(state->last_event_time),
									 TIMESTAMPTZOID, &utc)
				: NULL);
	if (state->extra)
	{
		JsonbIterator *it = JsonbIteratorInit(&state->extra->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_KEY || tok == WJB_VALUE)
				pushJsonbValue(&ps, tok, &v);
	}
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * Read back a stored document.  The store is written only by nodes, so a
 * document that does not have our shape means the table was edited by hand:
 * that is an error, not something to repair silently.
 */
static const char *const state_keys[] = {
	"mall_id", "user_id", "logged_in", "login_count", "nickname", "balance",
	"last_event_time"
};

static bool
is_state_key(const char *key, int len)
{
	for (int i = 0; i < lengthof(state_keys); i++)
		if (strlen(state_keys[i]) == len && memcmp(state_keys[i], key, len) == 0)
			return true;
	return false;
}

/*
 * The keys of doc that are not the built-in ones, as an object in the
 * current memory context; NULL if there are none.
 */
static Jsonb *
extra_keys(Jsonb *doc)
{
	JsonbParseState *ps = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		keep = false;
	int			nextra = 0;

	it = JsonbIteratorInit(&doc->root);
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			keep = !is_state_key(v.val.string.val, v.val.string.len);
			nextra += keep;
		}
		if ((tok == WJB_KEY || tok == WJB_VALUE) && keep)
			pushJsonbValue(&ps, tok, &v);
	}
	v = *pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return nextra > 0 ? JsonbValueToJsonb(&v) : NULL;
}

void
dc_entity_from_jsonb(Jsonb *doc, int64 revision, DcEntityState *state)
{
	JsonbValue *v;
	char	   *text;

	dc_entity_init(state);
	state->revision = revision;
	/* documents without keys of user-defined commands are the common case */
	if (JsonContainerSize(&doc->root) != lengthof(state_keys))
		state->extra = extra_keys(doc);

	if ((v = payload_key(doc, "logged_in")) != NULL && v->type == jbvBool)
		state->logged_in = v->val.boolean;
	if ((v = payload_key(doc, "login_count")) != NULL && v->type == jbvNumeric)
		state->login_count = DatumGetInt64(DirectFunctionCall1(numeric_int8,
															   NumericGetDatum(v->val.numeric)));
	if ((v = payload_key(doc, "nickname")) != NULL && v->type == jbvString)
	{
		if (v->val.string.len >= DC_NICKNAME_BUFSIZE)
			elog(ERROR, "stored nickname is too long");
		state->has_nickname = true;
		memcpy(state->nickname, v->val.string.val, v->val.string.len);
		state->nickname[v->val.string.len] = '\0';
	}
	if ((v = payload_key(doc, "balance")) != NULL &&
		(text = money_value_text(v)) != NULL &&
		!dc_money_parse(text, &state->balance_cents))
		elog(ERROR, "stored balance \"%s\" is not an amount", text);
	if ((v = payload_key(doc, "last_event_time")) != NULL && v->type == jbvString)
	{
		text = jsonb_string_dup(v);
		state->has_event_time = true;
		state->last_event_time =
			DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													CStringGetDatum(text),
													ObjectIdGetDatum(InvalidOid),
													Int32GetDatum(-1)));
	}
}

/*
 * A stored document in the form a node replies with: as it is when it is
 * (a node of this version wrote it: the balance a string), else read and
 * rendered again (a balance stored as a number, say).
 */
Jsonb *
dc_entity_canonical(Jsonb *doc, const char *mall_id, const char *user_id, int64 revision)
{
	JsonbValue *balance = payload_key(doc, "balance");
	DcEntityState state;

	if (balance != NULL && balance->type == jbvString &&
		JsonContainerSize(&doc->root) >= lengthof(state_keys))
		return doc;
	dc_entity_from_jsonb(doc, revision, &state);
	return dc_entity_to_jsonb(mall_id, user_id, &state);
}

static JsonbValue *
state_key(Jsonb *doc, const char *command, const char *key, enum jbvType type,
		  bool nullable)
{
	JsonbValue *v = payload_key(doc, key);

	if (v == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned a state without \"%s\"",
					   command, key),
				errhint("Return the state passed in with your changes applied, e.g. state || jsonb_build_object(...)."));
	if (v->type == jbvNull && nullable)
		return NULL;
	if (v->type != type)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned a state whose \"%s\" is not a %s",
					   command, key,
					   type == jbvBool ? "boolean" : type == jbvNumeric ? "number" : "string"));
	return v;
}

/*
 * Check the state a user-defined command's handler returned: an object of
 * at most DC_MAX_STATE_BYTES, with the entity's ids unchanged and every
 * built-in key present with a value a built-in command could have left.
 * Keys of its own are free.  Raises an error (the command's, not the
 * batch's) otherwise.
 */
void
dc_entity_check_doc(Jsonb *doc, Jsonb *before, const char *command)
{
	JsonbValue *v;
	char	   *text;
	int64		cents;

	if (!JB_ROOT_IS_OBJECT(doc) || JB_ROOT_IS_SCALAR(doc))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" must return a JSON object", command));
	if (VARSIZE(doc) > DC_MAX_STATE_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("handler of command \"%s\" returned a state of %zu bytes; the limit is %d bytes",
					   command, (size_t) VARSIZE(doc), DC_MAX_STATE_BYTES));
	for (int i = 0; i < 2; i++)
	{
		JsonbValue *was = payload_key(before, state_keys[i]);

		v = state_key(doc, command, state_keys[i], jbvString, false);
		if (was == NULL || was->type != jbvString ||
			v->val.string.len != was->val.string.len ||
			memcmp(v->val.string.val, was->val.string.val, v->val.string.len) != 0)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("handler of command \"%s\" must not change \"%s\"",
						   command, state_keys[i]));
	}
	(void) state_key(doc, command, "logged_in", jbvBool, false);
	v = state_key(doc, command, "login_count", jbvNumeric, false);
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	if (parse_cents(text, DC_BALANCE_DIGITS, &cents) != CENTS_OK || cents < 0 || cents % 100 != 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned \"login_count\" %s; it must be a whole number from 0",
					   command, text));
	if ((v = state_key(doc, command, "nickname", jbvString, true)) != NULL &&
		(v->val.string.len == 0 || v->val.string.len >= DC_NICKNAME_BUFSIZE ||
		 pg_mbstrlen_with_len(v->val.string.val, v->val.string.len) > DC_MAX_NICKNAME_CHARS))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned a \"nickname\" that is empty or longer than %d characters",
					   command, DC_MAX_NICKNAME_CHARS));
	v = payload_key(doc, "balance");
	if (v == NULL || (text = money_value_text(v)) == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned a state %s \"balance\"",
					   command, v == NULL ? "without" : "with a non-numeric"),
				errhint("Return the balance as a string with two decimals, e.g. \"100.50\", or as a number."));
	if (!dc_money_parse(text, &cents))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("handler of command \"%s\" returned \"balance\" %s; it must be from 0 to 9999999999999999.99 with at most 2 decimal places",
					   command, dc_quote_for_message(text)));
	if ((v = state_key(doc, command, "last_event_time", jbvString, true)) != NULL)
		(void) DirectFunctionCall3(timestamptz_in,
								   CStringGetDatum(jsonb_string_dup(v)),
								   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/*
 * A payload that dc_command_parse turns back into cmd (a saga step's
 * record aside): how a command travels to another server (forward.c).
 */
Jsonb *
dc_command_payload(const DcCommand *cmd)
{
	JsonbParseState *ps = NULL;

	if (cmd->kind == DC_CMD_USER)
		return (Jsonb *) cmd->payload;
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	if (cmd->command_id[0] != '\0')
		dc_push_string(&ps, "command_id", cmd->command_id);
	if (cmd->kind == DC_CMD_ADD_BALANCE || cmd->kind == DC_CMD_DEDUCT_BALANCE ||
		cmd->kind == DC_CMD_REFUND_BALANCE)
		dc_push_money(&ps, "amount", cmd->amount_cents);
	if (cmd->kind == DC_CMD_UPDATE_PROFILE)
		dc_push_string(&ps, "nickname", cmd->nickname);
	return JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

/*
 * What a command asks for, as the command log keeps it next to the reply
 * of a command sent with a command_id: its name and arguments.  A retry
 * must ask for the same to be answered from the log.
 */
Jsonb *
dc_command_request(const DcCommand *cmd)
{
	JsonbParseState *ps = NULL;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_string(&ps, "command", cmd->name);
	switch (cmd->kind)
	{
		case DC_CMD_ADD_BALANCE:
		case DC_CMD_DEDUCT_BALANCE:
		case DC_CMD_REFUND_BALANCE:
			dc_push_money(&ps, "amount", cmd->amount_cents);
			break;
		case DC_CMD_UPDATE_PROFILE:
			dc_push_string(&ps, "nickname", cmd->nickname);
			break;
		case DC_CMD_USER:
			dc_push_jsonb(&ps, "payload", (Jsonb *) cmd->payload);
			break;
		default:
			break;
	}
	return JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
}

Jsonb *
dc_build_reply(bool ok, const char *label, Jsonb *state_doc,
			   int64 revision, int shard, const char *node_name)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	/* in jsonb's order, as in dc_entity_to_jsonb */
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	dc_push_bool(&ps, "ok", ok);
	dc_push_string(&ps, "node", node_name);
	if (!ok)
		dc_push_string(&ps, "error", label);
	dc_push_int(&ps, "shard", shard);
	dc_push_jsonb(&ps, "state", state_doc);
	if (ok)
		dc_push_string(&ps, "result", label);
	dc_push_int(&ps, "revision", revision);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}
