/*-------------------------------------------------------------------------
 *
 * durable_cluster.h
 *	  Settings, limits and cross-module entry points of durable_cluster.
 *
 * The extension is split by concern (see README "Source layout"):
 *	 shard_hash.c		Java String.hashCode and shard ids
 *	 entity.c			entity state and the built-in command handlers
 *	 inbox.c			shared memory: shard map, node table, request slots
 *	 store.c			the only code that reads or writes the cluster tables
 *	 node.c				the node background worker
 *	 api.c				SQL-callable functions
 *	 durable_cluster.c	module load: GUCs, hooks, static workers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DURABLE_CLUSTER_H
#define DURABLE_CLUSTER_H

#include "postgres.h"

/* Hard limits; shared memory is sized from them. */
#define DC_MAX_NODES			64
#define DC_MAX_SHARDS			10000
#define DC_DEFAULT_SHARDS		100
#define DC_MAX_ID_BYTES			255
#define DC_MAX_ADDRESS_LEN		48	/* durable_cluster.advertise_address */

/* the hint of every "may or may not have been applied" (40003) error */
#define DC_RETRY_HINT \
	"Send it again with the same \"command_id\" in its payload, which applies it at most once; without one, read the entity with dc_get_state() before retrying."

/*
 * The role every session of the cluster's own logs in as: node store
 * sessions, the saga worker, forwarding and remote reads (README,
 * "Security").  The extension script creates it; it is no superuser.
 */
#define DC_CLUSTER_ROLE			"dc_cluster"

/* GUCs (durable_cluster.c) */
extern char *dc_database;
extern char *dc_store;
extern char *dc_advertise_address;
extern int	dc_nodes;
extern int	dc_at_commit_retention_ms;
extern int	dc_max_nodes;
extern int	dc_ask_timeout_ms;
extern int	dc_heartbeat_interval_ms;
extern int	dc_failure_timeout_ms;
extern int	dc_command_timeout_ms;
extern int	dc_passivate_idle_after_ms;
extern int	dc_max_entities_per_node;

/* true when loaded through shared_preload_libraries */
extern bool dc_preloaded;

/* Raise an error unless the library was preloaded and serves this database. */
extern void dc_check_usable(void);

/* "host:port" of this server, as members and cluster status report it */
extern const char *dc_self_address(void);

/* true when the store is this server and no advertise_address is set */
extern bool dc_single_server(void);
extern void dc_check_timeouts(void);

/* true when the store is this server (durable_cluster.store empty) */
extern bool dc_store_is_here(void);

/* Fill in the background worker that runs node slot index. */
struct BackgroundWorker;
extern void dc_node_worker(struct BackgroundWorker *worker, int index);

/* node.c */
extern PGDLLEXPORT void dc_node_main(Datum main_arg);
extern void dc_node_name(int node_index, char *buf, size_t len);

#endif							/* DURABLE_CLUSTER_H */
