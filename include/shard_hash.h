/*-------------------------------------------------------------------------
 *
 * shard_hash.h
 *	  Entity to shard mapping, identical to Pekko's HashCodeMessageExtractor.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_SHARD_HASH_H
#define DC_SHARD_HASH_H

/* Java String.hashCode() of a string given in the server encoding */
extern int32 dc_java_hashcode(const char *str, int len);

/* abs(hashCode(mall_id || '-' || user_id)) % number_of_shards */
extern int	dc_entity_shard(const char *mall_id, const char *user_id, int number_of_shards);

#endif							/* DC_SHARD_HASH_H */
