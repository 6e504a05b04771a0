/*-------------------------------------------------------------------------
 *
 * jsonb_build.h
 *	  Small helpers to build jsonb documents with pushJsonbValue.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_JSONB_BUILD_H
#define DC_JSONB_BUILD_H

#include "utils/jsonb.h"

/*
 * Each pushes one value: under "key" inside an object, or as an array
 * element when key is NULL.
 */
extern void dc_push_string(JsonbParseState **ps, const char *key, const char *value);
extern void dc_push_int(JsonbParseState **ps, const char *key, int64 value);
/* an amount of money in cents, as a string with two decimals: "100.50" */
extern void dc_push_money(JsonbParseState **ps, const char *key, int64 cents);
extern void dc_push_bool(JsonbParseState **ps, const char *key, bool value);
extern void dc_push_jsonb(JsonbParseState **ps, const char *key, Jsonb *value);

/* the same document, as jsonb's = says, without needing a locale */
extern bool dc_jsonb_equal(Jsonb *a, Jsonb *b);

/* The text of a finished document (the result of the last push). */
extern char *dc_jsonb_doc_text(Jsonb *doc);
extern char *dc_jsonb_text(JsonbValue *root);

#endif							/* DC_JSONB_BUILD_H */
