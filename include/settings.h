/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  Settings (settings.c), limits and the constants every layer shares.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#ifndef DC_SETTINGS_H
#define DC_SETTINGS_H

#include "postgres.h"

/* Hard limits; shared memory is sized from them. */
#define DC_MAX_NODES			64
#define DC_MAX_SHARDS			10000
#define DC_DEFAULT_SHARDS		100
#define DC_MAX_ID_BYTES			255
#define DC_MAX_ADDRESS_LEN		48	/* durable_cluster.advertise_address */

/*
 * The version of the extension's SQL objects this library serves: the
 * control file's default_version, passed in by the Makefile.  A node serves
 * only an extension of this version (node.c).
 */
#ifndef DC_VERSION
#error "DC_VERSION must be defined (the Makefile takes it from durable_cluster.control)"
#endif

/* what to do when the extension and the library disagree on the version */
#define DC_VERSION_HINT \
	"Install the library of the extension's version on this server and restart it, or, once every server has the new library installed, run ALTER EXTENSION durable_cluster UPDATE in the store database (see CHANGELOG.md)."

/* the hint of every "may or may not have been applied" (40003) error */
#define DC_RETRY_HINT \
	"Send it again with the same \"command_id\" in its payload, which applies it at most once; without one, read the entity with dc.get_state() before retrying."

/*
 * The role every session of the cluster's own logs in as: node store
 * sessions, the saga worker, forwarding and remote reads
 * (docs/security.md).  The extension script creates it; it is no superuser.
 */
#define DC_CLUSTER_ROLE			"dc_cluster"

/* GUCs */
extern char *dc_database;
extern char *dc_store;
extern char *dc_advertise_address;
extern int	dc_nodes;
extern int	dc_at_commit_retention_ms;
extern int	dc_max_pending_per_role;
extern int	dc_max_nodes;
extern int	dc_ask_timeout_ms;
extern int	dc_heartbeat_interval_ms;
extern int	dc_failure_timeout_ms;
extern int	dc_batch_flush_wait_ms;
extern int	dc_command_timeout_ms;
extern int	dc_passivate_idle_after_ms;
extern int	dc_max_entities_per_node;
extern int	dc_command_log_retention_s;
extern int	dc_command_log_per_entity;
extern int	dc_saga_retention_s;

/* true when loaded through shared_preload_libraries */
extern bool dc_preloaded;
extern bool dc_store_in_process;

/* "host:port" of this server, as members and cluster status report it */
extern const char *dc_self_address(void);

/* true when the store is this server and no advertise_address is set */
extern bool dc_single_server(void);
extern void dc_check_timeouts(void);
extern void dc_check_reserved_connections(void);

/* true when the store is this server (durable_cluster.store empty) */
extern bool dc_store_is_here(void);

/* node-N, or node-N@advertise_address: the default name of node slot node_index */
extern void dc_node_name(int node_index, char *buf, size_t len);

/* define the settings (at load, from shared_preload_libraries) */
extern void dc_define_settings(void);

#endif							/* DC_SETTINGS_H */
