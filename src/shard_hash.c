/*-------------------------------------------------------------------------
 *
 * shard_hash.c
 *	  Java String.hashCode() and the shard of an entity.
 *
 * Pekko's HashCodeMessageExtractor places entity "mallId-userId" in shard
 * abs(id.hashCode) % numberOfShards.  Java hashes the string's UTF-16 code
 * units with 32-bit wrap-around, so characters outside the Basic
 * Multilingual Plane (emoji) count as two surrogate units.  We reproduce that
 * exactly, so an entity keeps its shard when it moves from the original
 * system.  Java's Math.abs(Integer.MIN_VALUE) is negative; we take 2^31
 * instead, as a shard id must not be negative.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "settings.h"
#include "shard_hash.h"

static inline uint32
hash_step(uint32 h, uint32 code_unit)
{
	return h * 31 + code_unit;
}

int32
dc_java_hashcode(const char *str, int len)
{
	const unsigned char *p;
	const unsigned char *end;
	char	   *utf8;
	uint32		h = 0;

	/* Work on UTF-8 whatever the database encoding is. */
	utf8 = pg_server_to_any(str, len, PG_UTF8);
	if (utf8 != str)
		len = strlen(utf8);

	p = (const unsigned char *) utf8;
	end = p + len;
	while (p < end)
	{
		int			clen = pg_utf_mblen(p);
		pg_wchar	cp;

		if (p + clen > end)
			elog(ERROR, "truncated UTF-8 sequence in entity id");
		cp = utf8_to_unicode(p);
		p += clen;

		if (cp >= 0x10000)
		{
			/* a supplementary character is a surrogate pair in UTF-16 */
			cp -= 0x10000;
			h = hash_step(h, 0xD800 + (cp >> 10));
			h = hash_step(h, 0xDC00 + (cp & 0x3FF));
		}
		else
			h = hash_step(h, cp);
	}

	if (utf8 != str)
		pfree(utf8);

	return (int32) h;
}

int
dc_entity_shard(const char *mall_id, const char *user_id, int number_of_shards)
{
	size_t		mall_len = strlen(mall_id);
	size_t		user_len = strlen(user_id);
	char	   *entity_id = palloc(mall_len + user_len + 2);
	int32		h;
	int64		magnitude;

	memcpy(entity_id, mall_id, mall_len);
	entity_id[mall_len] = '-';
	memcpy(entity_id + mall_len + 1, user_id, user_len + 1);

	h = dc_java_hashcode(entity_id, mall_len + user_len + 1);
	pfree(entity_id);

	/* in 64 bits, abs(INT32_MIN) is 2^31 rather than Java's negative value */
	magnitude = h < 0 ? -(int64) h : (int64) h;
	return (int) (magnitude % number_of_shards);
}
