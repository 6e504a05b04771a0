/*-------------------------------------------------------------------------
 *
 * jsonb_build.h
 *	  Small helpers to build jsonb documents with pushJsonbValue.
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_JSONB_BUILD_H
#define DC_JSONB_BUILD_H

#include "utils/jsonb.h"
#include "utils/numeric.h"

extern void dc_push_key(JsonbParseState **ps, const char *key);

/*
 * Each pushes one value: under "key" inside an object, or as an array
 * element when key is NULL.
 */
extern void dc_push_string(JsonbParseState **ps, const char *key, const char *value);
extern void dc_push_numeric(JsonbParseState **ps, const char *key, Numeric value);
extern void dc_push_int(JsonbParseState **ps, const char *key, int64 value);
/* an amount of money in cents, as a string with two decimals: "100.50" */
extern void dc_push_money(JsonbParseState **ps, const char *key, int64 cents);
extern char *dc_money_text(int64 cents);
extern void dc_push_bool(JsonbParseState **ps, const char *key, bool value);
extern void dc_push_jsonb(JsonbParseState **ps, const char *key, Jsonb *value);

/* The text of a finished document (the result of the last push). */
extern char *dc_jsonb_doc_text(Jsonb *doc);
extern char *dc_jsonb_text(JsonbValue *root);

#endif							/* DC_JSONB_BUILD_H */
