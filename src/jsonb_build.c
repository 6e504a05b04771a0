/*-------------------------------------------------------------------------
 *
 * jsonb_build.c
 *	  Small helpers to build jsonb documents with pushJsonbValue, shared by
 *	  the entity documents (entity.c) and the store's parameters (store.c).
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/numeric.h"

#include "jsonb_build.h"

/* a key, before a value or a nested array or object */
static void
push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
}

static void
push(JsonbParseState **ps, const char *key, JsonbValue *v)
{
	if (key)
		push_key(ps, key);
	pushJsonbValue(ps, key ? WJB_VALUE : WJB_ELEM, v);
}

/* a NULL value is JSON null */
void
dc_push_string(JsonbParseState **ps, const char *key, const char *value)
{
	JsonbValue	v;

	if (value == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) value;
		v.val.string.len = strlen(value);
	}
	push(ps, key, &v);
}

static void
push_numeric(JsonbParseState **ps, const char *key, Numeric value)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = value;
	push(ps, key, &v);
}

/*
 * Money as a JSON string with exactly two decimals, "100.50": JavaScript's
 * JSON.parse (and every parser that reads numbers as binary doubles) would
 * turn a JSON number of 16 digits into a neighbouring value, and 100.50
 * into 100.5.  A string reaches every client as written.
 */
static char *
money_text(int64 cents)
{
	uint64		abs_cents = cents < 0 ? -(uint64) cents : (uint64) cents;

	return psprintf("%s" UINT64_FORMAT ".%02d", cents < 0 ? "-" : "",
					abs_cents / 100, (int) (abs_cents % 100));
}

void
dc_push_money(JsonbParseState **ps, const char *key, int64 cents)
{
	dc_push_string(ps, key, money_text(cents));
}

void
dc_push_int(JsonbParseState **ps, const char *key, int64 value)
{
	push_numeric(ps, key, int64_to_numeric(value));
}

void
dc_push_bool(JsonbParseState **ps, const char *key, bool value)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = value;
	push(ps, key, &v);
}

/* a whole document, unpacked into the one being built */
void
dc_push_jsonb(JsonbParseState **ps, const char *key, Jsonb *value)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	push(ps, key, &v);
}

/* The text of a document */
char *
dc_jsonb_doc_text(Jsonb *doc)
{
	return JsonbToCString(NULL, &doc->root, VARSIZE(doc));
}

/* ... and of one being built (the value pushJsonbValue returned last) */
char *
dc_jsonb_text(JsonbValue *root)
{
	return dc_jsonb_doc_text(JsonbValueToJsonb(root));
}

/*
 * Are a and b the same document?  As jsonb's = for equality, without its
 * ordering: strings compare byte by byte (what any deterministic collation
 * says of equality), so no locale is needed, which a node, connected to no
 * database, does not have from PostgreSQL 18 on.  Object keys come in the
 * same order in both, as jsonb keeps them sorted by length and bytes.
 */
bool
dc_jsonb_equal(Jsonb *a, Jsonb *b)
{
	JsonbIterator *ia = JsonbIteratorInit(&a->root);
	JsonbIterator *ib = JsonbIteratorInit(&b->root);

	for (;;)
	{
		JsonbValue	va;
		JsonbValue	vb;
		JsonbIteratorToken ta = JsonbIteratorNext(&ia, &va, false);
		JsonbIteratorToken tb = JsonbIteratorNext(&ib, &vb, false);

		if (ta != tb)
			return false;
		switch (ta)
		{
			case WJB_DONE:
				return true;
			case WJB_BEGIN_ARRAY:
				if (va.val.array.nElems != vb.val.array.nElems ||
					va.val.array.rawScalar != vb.val.array.rawScalar)
					return false;
				break;
			case WJB_BEGIN_OBJECT:
				if (va.val.object.nPairs != vb.val.object.nPairs)
					return false;
				break;
			case WJB_KEY:
			case WJB_VALUE:
			case WJB_ELEM:
				if (va.type != vb.type)
					return false;
				if (va.type == jbvString &&
					(va.val.string.len != vb.val.string.len ||
					 memcmp(va.val.string.val, vb.val.string.val, va.val.string.len) != 0))
					return false;
				if (va.type == jbvNumeric &&
					!DatumGetBool(DirectFunctionCall2(numeric_eq,
													  NumericGetDatum(va.val.numeric),
													  NumericGetDatum(vb.val.numeric))))
					return false;
				if (va.type == jbvBool && va.val.boolean != vb.val.boolean)
					return false;
				break;
			default:
				break;
		}
	}
}
