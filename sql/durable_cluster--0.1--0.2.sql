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

/*
 * Tenants, second round (docs/security.md): a request acts as every role
 * its session is -- the login, the role of SET ROLE, the current user --
 * and each must be allowed.  A command sent at commit keeps them all
 * (roles, the login first; role_name is the login); rows of 0.1 have only
 * role_name, which is then the one role.
 */
ALTER TABLE durable_cluster.pending_commands ADD COLUMN roles text[];

-- malls checked as ids, commands as existing ones, both bounded (tenant.c)
CREATE FUNCTION durable_cluster.check_tenant_grant(malls text[], commands text[]) RETURNS void
AS 'MODULE_PATHNAME', 'dc_check_tenant_grant' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION durable_cluster.check_tenant_grant(text[], text[]) FROM PUBLIC;

/*
 * A role is restricted only if no role it can become (SET ROLE, or its
 * own attributes) could lift the restriction again: a superuser, a role
 * with CREATEROLE (which can grant itself dc_admin), dc_admin, or one that
 * may write the grants.
 */
CREATE OR REPLACE FUNCTION @extschema@.dc_restrict_role(role regrole, malls text[],
                                                        commands text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    escape text;
BEGIN
    IF role IS NULL OR malls IS NULL THEN
        RAISE EXCEPTION 'role and malls must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE oid = role) THEN
        RAISE EXCEPTION 'role % does not exist', role::oid
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM durable_cluster.check_tenant_grant(malls, commands);
    IF (SELECT rolsuper FROM pg_roles WHERE oid = role) THEN
        RAISE EXCEPTION 'superuser % cannot be restricted', role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT r.rolname INTO escape
      FROM pg_roles r
     WHERE pg_has_role(role, r.oid, 'MEMBER')
       AND (r.rolsuper OR r.rolcreaterole OR r.rolname = 'dc_admin'
            OR has_table_privilege(r.oid, 'durable_cluster.tenant_grants', 'INSERT, UPDATE, DELETE, TRUNCATE'))
     ORDER BY r.rolname LIMIT 1;
    IF escape IS NOT NULL THEN
        RAISE EXCEPTION 'role % cannot be restricted: %', role,
                        CASE WHEN escape = pg_get_userbyid(role) THEN 'it could lift the restriction itself'
                             ELSE format('it can act as %s, which could lift the restriction', quote_ident(escape)) END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A role that is, or can SET ROLE to, a superuser, a role with CREATEROLE, dc_admin, or a role that may write durable_cluster.tenant_grants can undo its own restriction.',
                  HINT = 'Restrict an application role that is a member of dc_client only.';
    END IF;
    -- the role's name as the check sees it (regrole's text is quoted)
    DELETE FROM durable_cluster.tenant_grants WHERE role_name = pg_get_userbyid(role);
    INSERT INTO durable_cluster.tenant_grants (role_name, mall_id, commands)
         SELECT DISTINCT pg_get_userbyid(role), m, commands FROM unnest(malls) m;
END
$$;

/*
 * Anyone may LISTEN durable_cluster: the joined event no longer carries
 * the member's address (dc_members shows it to dc_client).
 */
CREATE OR REPLACE FUNCTION durable_cluster.node_join(node_name text, node_index integer,
                                                     node_address text, node_pid integer,
                                                     node_roles text[])
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inc bigint;
BEGIN
    PERFORM durable_cluster.lock_map();
    INSERT INTO durable_cluster.members AS m
           (name, node_index, address, roles, status, incarnation, pid, started_at, last_heartbeat)
    VALUES (node_name, node_index, node_address, node_roles, 'up', 1, node_pid, now(), now())
    ON CONFLICT (name) DO UPDATE
       SET node_index = EXCLUDED.node_index, address = EXCLUDED.address,
           roles = EXCLUDED.roles, status = 'up', incarnation = m.incarnation + 1,
           pid = EXCLUDED.pid, started_at = now(), last_heartbeat = now()
    RETURNING incarnation INTO inc;

    UPDATE durable_cluster.shards SET epoch = epoch + 1 WHERE node = node_name;
    UPDATE durable_cluster.settings SET map_version = map_version + 1;
    PERFORM durable_cluster.announce(jsonb_build_object(
        'event', 'joined', 'node', node_name, 'incarnation', inc));
    RETURN inc;
END
$$;
