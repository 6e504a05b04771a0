/* durable_cluster--0.2--0.3.sql: from 0.2 to 0.3 (ALTER EXTENSION durable_cluster UPDATE) */
/* Copyright (c) 2026, the durable_cluster developers (LICENSE: the PostgreSQL License) */

\echo Use "ALTER EXTENSION durable_cluster UPDATE" to load this file. \quit

/*
 * The API has a schema of its own, dc, that only the extension's owner
 * may create objects in: called by their qualified names (dc.send_command),
 * its functions and views are the extension's whatever the caller's
 * search_path and whatever other roles created elsewhere (docs/security.md).
 * A schema dc that exists already, made by whoever, is not taken over.
 */
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'dc') THEN
        RAISE EXCEPTION 'schema "dc" exists already; durable_cluster puts its API there'
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'The API must be in a schema only the extension''s owner can create objects in, so the extension creates it itself.',
                  HINT = 'Rename or drop that schema (ALTER SCHEMA dc RENAME TO ...), then create or update the extension.';
    END IF;
END
$$;
CREATE SCHEMA dc;
-- (0.1's write_batch of sixteen arrays stays, for rolling upgrades from 0.1)
COMMENT ON SCHEMA dc IS 'durable_cluster''s API: call it by qualified names, as dc.send_command(...)';
GRANT USAGE ON SCHEMA dc TO PUBLIC;

/*
 * Tenants, second round (docs/security.md): a request acts as every role
 * its session is -- the login, the role of SET ROLE, the current user --
 * and each must be allowed.  A command sent at commit keeps them all
 * (roles, the login first; role_name is the login); rows of 0.1 have only
 * role_name, which is then the one role.
 */
ALTER TABLE durable_cluster.pending_commands ADD COLUMN roles text[];

/*
 * The saga worker sends waiting commands fairly between login roles and
 * in order per entity (at_commit.c): it looks them up by role and by
 * entity; the index of waiting ids alone has no reader left.
 */
CREATE INDEX pending_commands_by_role ON durable_cluster.pending_commands (role_name, id)
    WHERE status = 'pending';
CREATE INDEX pending_commands_by_entity ON durable_cluster.pending_commands (mall_id, user_id, id)
    WHERE status = 'pending';
DROP INDEX durable_cluster.pending_commands_pending;

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
CREATE FUNCTION dc.restrict_role(role regrole, malls text[], commands text[] DEFAULT NULL)
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

/* ---- the API in schema dc ---- */

CREATE FUNCTION dc.send_command(mall_id text, user_id text, command text,
                                payload jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_send_command' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc.send_command(text, text, text, jsonb) IS
    'apply a command to entity (mall_id, user_id) on the node owning its shard; replies after commit';

CREATE FUNCTION dc.tell(mall_id text, user_id text, command text, payload jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'dc_tell' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc.tell(text, text, text, jsonb) IS
    'fire and forget: returns once the node owning the entity''s shard has the command';

-- VOLATILE: it reads the newest committed state, not the statement's
-- snapshot, so its result may differ within one statement.
CREATE FUNCTION dc.get_state(mall_id text, user_id text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_get_state' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION dc.get_state(text, text) IS
    'newest committed state of an entity, as the command get_state replies it (revision 0: never stored)';

CREATE FUNCTION dc.shard_id(mall_id text, user_id text, number_of_shards integer DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'dc_shard_id' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION dc.shard_id(text, text, integer) IS
    'shard of an entity: abs(Java hashCode of mall_id-user_id) % number_of_shards, as Pekko';

CREATE FUNCTION dc.java_hashcode(text) RETURNS integer
AS 'MODULE_PATHNAME', 'dc_java_hashcode_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION dc.java_hashcode(text) IS 'Java String.hashCode() of a text';

CREATE FUNCTION dc.transfer(from_mall text, from_user text, to_mall text, to_user text,
                            amount numeric) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_transfer' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc.transfer(text, text, text, text, numeric) IS
    'move amount from one entity''s balance to another''s: deduct, add, refund if the add is rejected';

CREATE FUNCTION dc.send_command_at_commit(mall_id text, user_id text, command text,
                                          payload jsonb DEFAULT '{}') RETURNS text
AS 'MODULE_PATHNAME', 'dc_send_command_at_commit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc.send_command_at_commit(text, text, text, jsonb) IS
    'a command applied once after the calling transaction commits, never if it rolls back; returns its command_id';

-- bound to its command: the outcome of command_id only if it was sent as
-- this command with these arguments (as the command log binds replies)
CREATE FUNCTION dc.command_outcome(mall_id text, user_id text, command_id text, command text,
                                   payload jsonb DEFAULT '{}') RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_command_outcome' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc.command_outcome(text, text, text, text, jsonb) IS
    'status (pending, done, failed), reply or error of a command sent with dc.send_command_at_commit';

-- commands: [{"mall_id": ..., "user_id": ..., "command": ..., "payload": {...}}, ...]
CREATE FUNCTION dc.send_commands(commands jsonb)
RETURNS TABLE (n integer, reply jsonb, sqlstate text, message text)
AS 'MODULE_PATHNAME', 'dc_send_commands' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION dc.send_commands(jsonb) IS
    'send up to 1000 commands at once; one row per command in input order: its reply, or its error';

CREATE FUNCTION dc.version(OUT library text, OUT extension text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT durable_cluster.library_version(),
           (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'durable_cluster')
$$;
COMMENT ON FUNCTION dc.version() IS
    'version of the library this server loaded, and of the extension installed in this database';

CREATE FUNCTION dc.add_node(name text DEFAULT NULL, roles text[] DEFAULT '{}') RETURNS text
AS 'MODULE_PATHNAME', 'dc_add_node' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc.add_node(text, text[]) IS
    'start a node worker now; it joins and receives its share of shards';

CREATE FUNCTION dc.remove_node(name text) RETURNS void
AS 'MODULE_PATHNAME', 'dc_remove_node' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc.remove_node(text) IS
    'make a node leave gracefully: it hands its shards over and exits';

CREATE FUNCTION dc.stats_reset() RETURNS void
AS 'MODULE_PATHNAME', 'dc_stats_reset' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc.stats_reset() IS
    'zero the counters of dc.node_stats for every node of this server';

CREATE FUNCTION dc.register_command(name text, handler regprocedure) RETURNS void
AS 'MODULE_PATHNAME', 'dc_register_command' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc.register_command(text, regprocedure) IS
    'add a command whose handler (state jsonb, payload jsonb) RETURNS jsonb returns the new state';
CREATE FUNCTION dc.unregister_command(name text) RETURNS void
AS 'MODULE_PATHNAME', 'dc_unregister_command' LANGUAGE C VOLATILE;

CREATE FUNCTION dc.set_number_of_shards(number_of_shards integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stored bigint;
BEGIN
    IF number_of_shards IS NULL OR number_of_shards NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'number of shards must be between 1 and 10000, got %', number_of_shards
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- wait for in-flight batches, then keep writers out until we commit
    LOCK TABLE durable_cluster.entity_state IN SHARE MODE;
    SELECT count(*) INTO stored FROM durable_cluster.entity_state;
    IF stored > 0 THEN
        RAISE EXCEPTION 'cannot change the number of shards once the cluster holds data'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s entities are stored.', stored),
                  HINT = 'Set the number of shards right after CREATE EXTENSION, before any command is sent.';
    END IF;
    PERFORM durable_cluster.lock_map();
    UPDATE durable_cluster.settings s SET number_of_shards = set_number_of_shards.number_of_shards;
    PERFORM durable_cluster.reset_shards(set_number_of_shards.number_of_shards);
    PERFORM durable_cluster.reconcile(
        (extract(epoch FROM current_setting('durable_cluster.failure_timeout')::interval) * 1000)::integer);
END
$$;
COMMENT ON FUNCTION dc.set_number_of_shards(integer) IS
    'change the number of shards; refused once any entity state is stored';

CREATE FUNCTION dc.unrestrict_role(role regrole) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM durable_cluster.tenant_grants WHERE role_name = pg_get_userbyid(role);
$$;
COMMENT ON FUNCTION dc.restrict_role(regrole, text[], text[]) IS
    'let role reach only the entities of these malls, with these commands (NULL: any)';
COMMENT ON FUNCTION dc.unrestrict_role(regrole) IS
    'let role reach every mall again';

CREATE VIEW dc.members AS
SELECT m.name, m.status, m.address, m.roles, m.incarnation, m.pid,
       m.started_at, m.last_heartbeat,
       now() - m.last_heartbeat AS heartbeat_age,
       count(s.shard_id)::integer AS shard_count,
       durable_cluster.shard_ranges(m.name) AS shards,
       min(s.shard_id) AS first_shard,
       max(s.shard_id) AS last_shard
  FROM durable_cluster.members m
  LEFT JOIN durable_cluster.shards s ON s.node = m.name
 GROUP BY m.name
 ORDER BY m.node_index;

CREATE VIEW dc.shards AS
SELECT shard_id, node, epoch FROM durable_cluster.shards ORDER BY shard_id;

CREATE VIEW dc.node_stats AS
SELECT node, entities_in_memory, commands, batches,
       round(commands::numeric / nullif(batches, 0), 2) AS avg_commands_per_batch,
       passivations, last_batch_at, stats_reset, memory_bytes
  FROM durable_cluster.node_stats();

CREATE VIEW dc.commands AS
SELECT c.name, c.handler, p.proowner::regrole AS runs_as, c.registered_by, c.registered_at
  FROM durable_cluster.commands c
  LEFT JOIN pg_catalog.pg_proc p ON p.oid = c.handler;

CREATE VIEW dc.tenant_grants AS
SELECT role_name, mall_id, commands FROM durable_cluster.tenant_grants;

/*
 * True once everything committed so far on this server is durable: a node
 * writing in process commits without waiting for the flush (durable.c).
 * A view of what nodes write gates its rows on it, evaluated once per
 * query (a one-time filter: STABLE, no arguments).  A view's functions
 * run with the reader's privileges: whoever may read the view may call it.
 */
CREATE FUNCTION durable_cluster.wait_durable() RETURNS boolean
AS 'MODULE_PATHNAME', 'dc_wait_durable_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION durable_cluster.wait_durable() FROM PUBLIC;

CREATE VIEW dc.sagas AS
SELECT saga_id, from_mall, from_user, to_mall, to_user, amount, step, status,
       created_at, updated_at
  FROM durable_cluster.sagas
 WHERE durable_cluster.wait_durable();

/*
 * What the extension's tables hold on this server: rows as the statistics
 * estimate them (autovacuum's ANALYZE keeps them close; no table is
 * scanned) and bytes with indexes and TOAST.
 */
CREATE VIEW dc.storage AS
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

/*
 * Schemas holding the API where a role other than a superuser or the
 * schema's owner may create objects: dc (only if someone granted that),
 * and the extension's own schema, which keeps the short names of 0.1 and
 * 0.2 (dc_send_command, ...).  There another role could add an overload that
 * a call by a short name picks instead of the extension's function.
 * Checked at CREATE EXTENSION and update, and by each server's saga
 * worker when it starts (a WARNING in the log); dc.cluster_status() lists
 * it too.
 */
CREATE FUNCTION durable_cluster.api_exposure(OUT schema_name text, OUT creators text)
RETURNS SETOF record
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname::text,
           CASE WHEN p.public THEN 'PUBLIC' ELSE r.creators END
      FROM pg_namespace n,
           LATERAL (SELECT EXISTS (SELECT FROM aclexplode(n.nspacl) a
                                    WHERE a.grantee = 0 AND a.privilege_type = 'CREATE') AS public) p,
           LATERAL (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) AS creators
                      FROM pg_roles r
                     WHERE NOT r.rolsuper AND r.oid <> n.nspowner
                       AND has_schema_privilege(r.oid, n.oid, 'CREATE')) r
     WHERE (n.nspname = 'dc'
            OR n.oid = (SELECT extnamespace FROM pg_extension WHERE extname = 'durable_cluster'))
       AND (p.public OR r.creators IS NOT NULL)
     ORDER BY n.nspname
$$;

CREATE FUNCTION dc.cluster_status() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'number_of_members', (SELECT count(*) FROM dc.members WHERE status = 'up'),
    'self_address', durable_cluster.self_address(),
    'self_roles', (SELECT coalesce(jsonb_agg(DISTINCT r), '[]')
                     FROM dc.members, unnest(roles) r
                    WHERE status = 'up' AND address = durable_cluster.self_address()),
    'number_of_shards', (SELECT number_of_shards FROM durable_cluster.settings),
    'missing_workers', durable_cluster.missing_workers(),
    'schemas_others_can_create_in', (SELECT coalesce(jsonb_object_agg(schema_name, creators), '{}')
                                       FROM durable_cluster.api_exposure()),
    'members', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'name', name, 'status', status, 'address', address,
                    'roles', to_jsonb(roles), 'incarnation', incarnation,
                    'shard_count', shard_count,
                    'shards', shards,
                    'heartbeat_age_ms',
                        round(extract(epoch FROM heartbeat_age) * 1000)::bigint)), '[]')
                  FROM dc.members))
$$;
COMMENT ON FUNCTION dc.cluster_status() IS
    'members, shard ownership and this server''s address, as Pekko''s getClusterStatus';

/*
 * Privileges, as 0.1 and 0.2 gave them to the same functions (docs/security.md):
 * the shard functions and dc.version() are PUBLIC's, nothing that changes
 * state or reads an entity is.
 */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dc FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dc.shard_id(text, text, integer), dc.java_hashcode(text),
                          dc.version() TO PUBLIC;
GRANT EXECUTE ON FUNCTION dc.send_command(text, text, text, jsonb),
                          dc.tell(text, text, text, jsonb),
                          dc.send_commands(jsonb),
                          dc.get_state(text, text),
                          dc.transfer(text, text, text, text, numeric),
                          dc.send_command_at_commit(text, text, text, jsonb),
                          dc.command_outcome(text, text, text, text, jsonb),
                          dc.cluster_status() TO dc_client;
GRANT EXECUTE ON FUNCTION dc.add_node(text, text[]), dc.remove_node(text),
                          dc.set_number_of_shards(integer),
                          dc.register_command(text, regprocedure),
                          dc.unregister_command(text), dc.stats_reset(),
                          dc.restrict_role(regrole, text[], text[]),
                          dc.unrestrict_role(regrole) TO dc_admin;
-- a server whose store is another reads entities there with this
GRANT EXECUTE ON FUNCTION dc.get_state(text, text) TO dc_cluster;
GRANT SELECT ON dc.members, dc.shards, dc.node_stats, dc.commands, dc.storage TO dc_client;
-- they name every mall
GRANT SELECT ON dc.tenant_grants, dc.sagas TO dc_admin;
GRANT EXECUTE ON FUNCTION durable_cluster.wait_durable() TO dc_admin;
REVOKE ALL ON FUNCTION durable_cluster.api_exposure() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION durable_cluster.api_exposure() TO dc_cluster;

/*
 * The short names of 0.1 and 0.2, in the extension's schema, stay for the
 * applications that call them: the C functions as they were, the others
 * and the views calling their dc twins.  Call dc.* in new code: a short
 * name called without its schema can be captured by an overload another
 * role creates in a schema on the caller's search_path.
 */
CREATE OR REPLACE FUNCTION @extschema@.dc_cluster_status() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT dc.cluster_status() $$;
CREATE OR REPLACE FUNCTION @extschema@.dc_set_number_of_shards(number_of_shards integer) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT dc.set_number_of_shards(number_of_shards) $$;
CREATE OR REPLACE FUNCTION @extschema@.dc_restrict_role(role regrole, malls text[],
                                                        commands text[] DEFAULT NULL) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT dc.restrict_role(role, malls, commands) $$;
CREATE OR REPLACE FUNCTION @extschema@.dc_unrestrict_role(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT dc.unrestrict_role(role) $$;
CREATE OR REPLACE FUNCTION @extschema@.dc_version(OUT library text, OUT extension text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT * FROM dc.version() $$;
CREATE OR REPLACE VIEW @extschema@.dc_members AS SELECT * FROM dc.members;
CREATE OR REPLACE VIEW @extschema@.dc_shards AS SELECT * FROM dc.shards;
CREATE OR REPLACE VIEW @extschema@.dc_node_stats AS SELECT * FROM dc.node_stats;
CREATE OR REPLACE VIEW @extschema@.dc_commands AS SELECT * FROM dc.commands;
CREATE OR REPLACE VIEW @extschema@.dc_tenant_grants AS SELECT * FROM dc.tenant_grants;
CREATE OR REPLACE VIEW @extschema@.dc_sagas AS SELECT * FROM dc.sagas;
CREATE OR REPLACE VIEW @extschema@.dc_storage AS SELECT * FROM dc.storage;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
         WHERE d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'durable_cluster')
           AND d.deptype = 'e'
           AND p.pronamespace = (SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = 'durable_cluster')
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', f,
            pg_catalog.format('the short name of 0.1 and 0.2 for dc.%s: call that instead, by its qualified name',
                              pg_catalog.substr((SELECT proname FROM pg_catalog.pg_proc WHERE oid = f), 4)));
    END LOOP;
END
$$;

-- where others may create objects beside the API: said at once
DO $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT * FROM durable_cluster.api_exposure() LOOP
        RAISE WARNING 'roles other than its owner can create objects in schema %, which holds durable_cluster''s API: %',
                      quote_ident(e.schema_name), e.creators
            USING DETAIL = 'Such a role can add an overload that a call of the API by its short name (dc_send_command, ...) picks instead of the extension''s function; calls by qualified name (dc.send_command) are safe.',
                  HINT = format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC (and from the roles named), and call the API as dc.send_command(...).',
                                e.schema_name);
    END LOOP;
END
$$;

/*
 * The cluster's sessions must find a connection slot whatever other roles
 * hold: PostgreSQL 16 and later keep reserved_connections for the roles of
 * pg_use_reserved_connections (dc_cluster is NOINHERIT: this grant
 * inherits).  On 15 there is no such role, and the server says so at start.
 */
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pg_use_reserved_connections') THEN
        EXECUTE 'GRANT pg_use_reserved_connections TO dc_cluster WITH INHERIT TRUE';
    END IF;
END
$$;
