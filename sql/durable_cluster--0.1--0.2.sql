/* durable_cluster--0.1--0.2.sql: from 0.1 to 0.2 (ALTER EXTENSION durable_cluster UPDATE) */
/* Copyright (c) 2026, the durable_cluster developers (LICENSE: the PostgreSQL License) */

\echo Use "ALTER EXTENSION durable_cluster UPDATE" to load this file. \quit

/*
 * Ids compare byte by byte (COLLATE "C"): every command looks its entity
 * up by them, and a locale's rules would only make that slower.  Rebuilds
 * the two tables' indexes, holding their locks meanwhile.
 */
ALTER TABLE durable_cluster.entity_state
    ALTER COLUMN mall_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE durable_cluster.command_log
    ALTER COLUMN mall_id TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN command_id TYPE text COLLATE "C";

-- commands: [{"mall_id": ..., "user_id": ..., "command": ..., "payload": {...}}, ...]
CREATE FUNCTION dc_send_commands(commands jsonb)
RETURNS TABLE (n integer, reply jsonb, sqlstate text, message text)
AS 'MODULE_PATHNAME', 'dc_send_commands' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION dc_send_commands(jsonb) IS
    'send up to 1000 commands at once; one row per command in input order: its reply, or its error';
REVOKE ALL ON FUNCTION dc_send_commands(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dc_send_commands(jsonb) TO dc_client;

/*
 * A node's batch as one value, for durable_cluster.write_batch()
 * (store_batch.c): the fence of its shards at the epochs the node holds,
 * the entities it writes (old_revision 0: a new row), the command log
 * entries it adds and the transfer steps it applied.  The node sends it in
 * binary form, so the documents in it are read by their lengths.
 */
CREATE TYPE durable_cluster.batch_shard AS (shard_id integer, epoch bigint);
CREATE TYPE durable_cluster.batch_entity AS (mall_id text, user_id text, shard_id integer,
                                             state jsonb, revision bigint, old_revision bigint);
CREATE TYPE durable_cluster.batch_log_entry AS (mall_id text, user_id text, command_id text,
                                                reply jsonb, request jsonb);
CREATE TYPE durable_cluster.batch_saga_step AS (record jsonb, step text);
CREATE TYPE durable_cluster.batch AS (node_name text,
                                      fence durable_cluster.batch_shard[],
                                      entities durable_cluster.batch_entity[],
                                      log durable_cluster.batch_log_entry[],
                                      saga_steps durable_cluster.batch_saga_step[]);

-- NULL when written, else the shards found fenced (then nothing was written)
CREATE FUNCTION durable_cluster.write_batch(batch durable_cluster.batch) RETURNS integer[]
AS 'MODULE_PATHNAME', 'dc_write_batch_0_2' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION durable_cluster.write_batch(durable_cluster.batch) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION durable_cluster.write_batch(durable_cluster.batch) TO dc_cluster;

/*
 * 0.1's write_batch, sixteen arrays, stays: 0.1 nodes on servers not yet
 * restarted keep writing through it after this update (they do not check
 * the store's version).  The update to the next version drops it.
 */
COMMENT ON FUNCTION durable_cluster.write_batch(text, integer[], bigint[], text[], text[],
                                               integer[], jsonb[], bigint[], bigint[],
                                               text[], text[], text[], jsonb[], jsonb[],
                                               jsonb[], text[]) IS
    'the batch of a node of release 0.1; kept for a rolling upgrade from 0.1';

/*
 * Which versions this server runs: the library it loaded and the
 * extension's SQL objects in this database.  Nodes serve only when the two
 * agree; during a rolling upgrade, ask every server.
 */
CREATE FUNCTION durable_cluster.library_version() RETURNS text
AS 'MODULE_PATHNAME', 'dc_library_version' LANGUAGE C STABLE PARALLEL SAFE;
REVOKE ALL ON FUNCTION durable_cluster.library_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION durable_cluster.library_version() TO dc_cluster;

CREATE FUNCTION dc_version(OUT library text, OUT extension text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT durable_cluster.library_version(),
           (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'durable_cluster')
$$;
COMMENT ON FUNCTION dc_version() IS
    'version of the library this server loaded, and of the extension installed in this database';

/*
 * Retention (retention.c, run by the saga worker of the store's server).
 *
 * The command log is pruned by age without a time column: the marks say
 * where command_log_seq stood when; entries up to the newest mark older
 * than durable_cluster.command_log_retention are removed, oldest first,
 * through the index on seq.  The per-entity cap (command_log_per_entity)
 * is kept by write_batch through command_log_entity_seq.
 */
CREATE TABLE durable_cluster.command_log_marks (
    marked_at  timestamptz PRIMARY KEY,
    seq        bigint NOT NULL          -- command_log_seq's last value then
);
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.command_log_marks', '');
CREATE INDEX command_log_by_seq ON durable_cluster.command_log (seq);

-- finished transfers, oldest first, for saga_retention
CREATE INDEX sagas_finished ON durable_cluster.sagas (updated_at) WHERE status <> 'running';

GRANT SELECT, INSERT, DELETE ON durable_cluster.command_log_marks TO dc_cluster;

/*
 * What the extension's tables hold on this server: rows as the statistics
 * estimate them (autovacuum's ANALYZE keeps them close; no table is
 * scanned) and bytes with indexes and TOAST.
 */
CREATE VIEW dc_storage AS
SELECT c.relname::text AS table_name,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS estimated_rows,
       pg_catalog.pg_total_relation_size(c.oid) AS total_bytes,
       pg_catalog.pg_size_pretty(pg_catalog.pg_total_relation_size(c.oid)) AS total_size
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_depend d
    ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
  JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'durable_cluster'
 WHERE c.relkind = 'r';
GRANT SELECT ON dc_storage TO dc_client;
