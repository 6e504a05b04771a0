/* durable_cluster--0.1.sql: tables, views and functions of durable_cluster 0.1 */

\echo Use "CREATE EXTENSION durable_cluster" to load this file. \quit

/*
 * Internal tables live in their own schema; the user-facing API (dc_*)
 * lives in the extension's schema.  Only node workers write these tables,
 * through store.c, with the exception of dc_set_number_of_shards().
 */
CREATE SCHEMA durable_cluster;
COMMENT ON SCHEMA durable_cluster IS 'durable_cluster internal tables; written only by node workers';

CREATE TABLE durable_cluster.settings (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    number_of_shards integer NOT NULL DEFAULT 100
                     CHECK (number_of_shards BETWEEN 1 AND 10000),
    map_version      bigint NOT NULL DEFAULT 0      -- bumped on every shard map change
);
INSERT INTO durable_cluster.settings DEFAULT VALUES;

CREATE TABLE durable_cluster.members (
    name            text PRIMARY KEY,
    node_index      integer NOT NULL,       -- shared-memory slot of its worker
    address         text NOT NULL,
    roles           text[] NOT NULL DEFAULT '{dc-default}',
    status          text NOT NULL CHECK (status IN ('up', 'leaving', 'left', 'down')),
    incarnation     bigint NOT NULL,
    pid             integer,
    started_at      timestamptz NOT NULL,
    last_heartbeat  timestamptz NOT NULL
);

CREATE TABLE durable_cluster.shards (
    shard_id  integer PRIMARY KEY,
    node      text,                     -- owning member's name, NULL = unassigned
    epoch     bigint NOT NULL           -- grows on every change of owner
);
INSERT INTO durable_cluster.shards (shard_id, node, epoch)
    SELECT g, NULL, 0 FROM generate_series(0, 99) g;

CREATE TABLE durable_cluster.entity_state (
    mall_id     text NOT NULL,
    user_id     text NOT NULL,
    shard_id    integer NOT NULL,
    state       jsonb NOT NULL,
    revision    bigint NOT NULL CHECK (revision > 0),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (mall_id, user_id)
);

-- entity state and settings are user data: pg_dump keeps them
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.entity_state', '');

-- The replies of commands sent with a "command_id", so that a retry gets
-- the original reply and changes nothing.  Written by the batch that
-- applied the command; seq orders an entity's entries, and only an
-- entity's newest 1000 are sure to be kept (older ones are pruned now and
-- then by write_batch).
CREATE SEQUENCE durable_cluster.command_log_seq;
CREATE TABLE durable_cluster.command_log (
    mall_id     text NOT NULL,
    user_id     text NOT NULL,
    command_id  text NOT NULL,
    seq         bigint NOT NULL,
    reply       jsonb NOT NULL,
    request     jsonb NOT NULL,         -- the command and its arguments: a
                                        -- retry must send the same
    PRIMARY KEY (mall_id, user_id, command_id)
);
CREATE INDEX command_log_entity_seq ON durable_cluster.command_log (mall_id, user_id, seq);
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.command_log', '');
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.command_log_seq', '');
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.settings', '');

-- Transfers between two entities (saga.c), one row per saga.  A row is
-- written by the node that applies a step, in the transaction of that
-- step: the deduct creates it, the add or the refund finishes it.
CREATE SEQUENCE durable_cluster.saga_seq;
CREATE TABLE durable_cluster.sagas (
    saga_id     bigint PRIMARY KEY,
    from_mall   text NOT NULL,
    from_user   text NOT NULL,
    to_mall     text NOT NULL,
    to_user     text NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    step        text NOT NULL
                CHECK (step IN ('deducted', 'added', 'add_rejected', 'refunded', 'refund_rejected')),
    status      text NOT NULL CHECK (status IN ('running', 'completed', 'compensated')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_running ON durable_cluster.sagas (updated_at) WHERE status = 'running';
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.sagas', '');
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.saga_seq', '');

-- Commands registered with dc_register_command() (user_command.c).  Written
-- only through that function and dc_unregister_command(), which check
-- what a registration may be; handlers run as the function's owner.
CREATE TABLE durable_cluster.commands (
    name          text PRIMARY KEY,
    handler       regprocedure NOT NULL,
    registered_by regrole NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.commands', '');

-- Roles restricted to some malls (tenant.c): a role with rows here may
-- reach only the entities of those malls, and only with the listed
-- commands (NULL: any).  Roles are named, not referenced by oid: the
-- servers of a cluster each have their own.  Written by dc_restrict_role.
CREATE TABLE durable_cluster.tenant_grants (
    role_name  text NOT NULL,
    mall_id    text NOT NULL,
    commands   text[],
    PRIMARY KEY (role_name, mall_id)
);
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.tenant_grants', '');

/* ---- control plane, called by node workers (store.c) ---- */

CREATE FUNCTION durable_cluster.self_address() RETURNS text
    AS 'MODULE_PATHNAME', 'dc_self_address_sql' LANGUAGE C STABLE;

/*
 * Serialises every change of membership or shard map, whichever node makes
 * it: the lock of the settings row, so exactly one reconciler runs at a
 * time.  A row lock needs UPDATE on the table, so no role but the cluster's
 * and the extension's owner can take it and hold failover up (an advisory
 * lock could be taken by anyone).  With skip_locked it does not wait and
 * returns false if another transaction holds it.
 */
CREATE FUNCTION durable_cluster.lock_map(skip_locked boolean DEFAULT false) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF skip_locked THEN
        PERFORM FROM durable_cluster.settings FOR UPDATE SKIP LOCKED;
    ELSE
        PERFORM FROM durable_cluster.settings FOR UPDATE;
    END IF;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF skip_locked AND EXISTS (SELECT FROM durable_cluster.settings) THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'durable_cluster.settings has no row'
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'The row holds the number of shards; nodes wait until it is back.',
              HINT = 'Put it back with INSERT INTO durable_cluster.settings (number_of_shards) VALUES (<the number of shards the data was written with>).';
END
$$;

/*
 * Every membership or shard-map change is announced on the durable_cluster
 * channel, and wakes the nodes when its transaction commits so that they
 * react at once rather than at their next heartbeat.
 */
CREATE FUNCTION durable_cluster.wake_nodes_at_commit() RETURNS void
    AS 'MODULE_PATHNAME', 'dc_wake_nodes_at_commit' LANGUAGE C VOLATILE;

-- A NOTIFY payload holds less than 8000 bytes: an event too large for it
-- (the moves of a big rebalance) goes out without its list of moves, which
-- dc_shards shows anyway, and says so.
CREATE FUNCTION durable_cluster.announce(event jsonb) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_notify('durable_cluster',
                     CASE WHEN octet_length(event::text) < 7900 THEN event::text
                          ELSE (event - 'moves' || '{"moves_left_out": true}')::text END);
    SELECT durable_cluster.wake_nodes_at_commit();
$$;

/*
 * Bring the shard map in line with the live members.  Members whose
 * heartbeat is older than failure_timeout are marked down, and so are, at
 * once, members of the calling node's server (node_address) whose worker
 * is not among the running ones it lists: after a restart, a node added
 * with dc_add_node is gone and need not be waited for.  Then every
 * shard goes to an up member, balanced (counts differ by at most one),
 * moving as few shards as possible: each member keeps up to its quota of
 * the shards it owns (the members owning most get the larger quotas), and
 * only the shards of members that are gone, plus each member's surplus, are
 * handed, in shard order, to the members below quota, in node order.  From
 * an empty map this yields contiguous ranges.  A shard whose owner changes
 * gets a new epoch, which fences its previous owner.
 */
CREATE FUNCTION durable_cluster.reconcile(failure_timeout_ms integer,
                                         node_address text DEFAULT NULL,
                                         running jsonb DEFAULT '[]',
                                         node_name text DEFAULT NULL,
                                         node_incarnation bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k        integer;
    n        integer;
    gone     record;
    moves    jsonb;
    nmoved   integer;
BEGIN
    -- the calling node's heartbeat, so that its reconcile never leaves a
    -- gap of its own between two heartbeats (store.c)
    UPDATE durable_cluster.members SET last_heartbeat = clock_timestamp()
     WHERE name = node_name AND incarnation = node_incarnation AND status = 'up';

    -- another node is reconciling: it will do what we would
    IF NOT durable_cluster.lock_map(skip_locked => true) THEN
        RETURN 0;
    END IF;

    -- SKIP LOCKED: a paused node may hold its own row locked; it is marked
    -- down at a later round rather than blocking this one
    FOR gone IN
        UPDATE durable_cluster.members
           SET status = 'down'
         WHERE name IN (SELECT name FROM durable_cluster.members
                         WHERE status IN ('up', 'leaving')
                           AND (last_heartbeat < now() - make_interval(secs => failure_timeout_ms / 1000.0)
                                OR (address = node_address
                                    AND name NOT IN (SELECT jsonb_array_elements_text(running))))
                           FOR UPDATE SKIP LOCKED)
        RETURNING name, incarnation
    LOOP
        PERFORM durable_cluster.announce(jsonb_build_object(
            'event', 'down', 'node', gone.name, 'incarnation', gone.incarnation));
    END LOOP;

    SELECT count(*) INTO k FROM durable_cluster.members WHERE status = 'up';
    SELECT number_of_shards INTO n FROM durable_cluster.settings;

    WITH live AS (
        SELECT m.name, m.node_index, count(s.shard_id) AS have
          FROM durable_cluster.members m
          LEFT JOIN durable_cluster.shards s ON s.node = m.name
         WHERE m.status = 'up'
         GROUP BY m.name, m.node_index
    ), quota AS (
        SELECT name, node_index, have,
               n / nullif(k, 0) + CASE WHEN row_number() OVER (ORDER BY have DESC, node_index) <= n % nullif(k, 0)
                            THEN 1 ELSE 0 END AS want
          FROM live
    ), kept AS (
        SELECT s.shard_id
          FROM (SELECT shard_id, node,
                       row_number() OVER (PARTITION BY node ORDER BY shard_id) AS pos
                  FROM durable_cluster.shards) s
          JOIN quota q ON q.name = s.node AND s.pos <= q.want
    ), movable AS (
        -- A shard row stays locked while its owner's batch is in flight
        -- (the fence); such a shard moves at a later round, once that batch
        -- ended, instead of holding up every other move.
        SELECT shard_id FROM durable_cluster.shards
         WHERE shard_id NOT IN (SELECT shard_id FROM kept)
           FOR UPDATE SKIP LOCKED
    ), freed AS (
        SELECT shard_id, row_number() OVER (ORDER BY shard_id) AS k FROM movable
    ), open_slots AS (
        SELECT q.name, row_number() OVER (ORDER BY q.node_index, g) AS k
          FROM quota q, generate_series(1, q.want - least(q.have, q.want)) g
    ), moved AS (
        UPDATE durable_cluster.shards s
           SET node = o.name, epoch = s.epoch + 1
          FROM freed f
          LEFT JOIN open_slots o ON o.k = f.k
         WHERE s.shard_id = f.shard_id
           AND s.node IS DISTINCT FROM o.name
        RETURNING s.shard_id, s.node, s.epoch
    )
    SELECT count(*), jsonb_agg(jsonb_build_object('shard', shard_id, 'node', node, 'epoch', epoch)
                               ORDER BY shard_id)
      INTO nmoved, moves
      FROM moved;

    IF nmoved > 0 THEN
        UPDATE durable_cluster.settings SET map_version = map_version + 1;
        PERFORM durable_cluster.announce(jsonb_build_object(
            'event', 'rebalanced', 'shards_moved', nmoved, 'moves', moves));
    END IF;
    RETURN nmoved;
END
$$;

/*
 * A node joins as a new incarnation.  Shards still assigned to its name get
 * a new epoch, so nothing an earlier incarnation held can be written.
 */
CREATE FUNCTION durable_cluster.node_join(node_name text, node_index integer,
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
        'event', 'joined', 'node', node_name, 'incarnation', inc, 'address', node_address));
    RETURN inc;
END
$$;

/*
 * A node starts to leave: it stops counting as a live member, so the
 * reconcile in node_leave hands its shards over.
 */
CREATE FUNCTION durable_cluster.node_leaving(node_name text, node_incarnation bigint)
RETURNS boolean
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    UPDATE durable_cluster.members SET status = 'leaving'
     WHERE name = node_name AND incarnation = node_incarnation AND status = 'up'
    RETURNING true
$$;

CREATE FUNCTION durable_cluster.node_leave(node_name text, node_incarnation bigint,
                                           failure_timeout_ms integer)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM durable_cluster.lock_map();
    UPDATE durable_cluster.members SET status = 'left'
     WHERE name = node_name AND incarnation = node_incarnation
       AND status IN ('up', 'leaving');
    IF FOUND THEN
        PERFORM durable_cluster.announce(jsonb_build_object(
            'event', 'left', 'node', node_name, 'incarnation', node_incarnation));
        PERFORM durable_cluster.reconcile(failure_timeout_ms);
    END IF;
END
$$;

-- What a node's batch needs from the store, in one call (store_batch.c):
-- the stored state of entities it does not hold, the logged replies of its
-- commands sent with a command_id.
CREATE FUNCTION durable_cluster.load_batch(mall_ids text[], user_ids text[],
                                           log_mall_ids text[], log_user_ids text[],
                                           command_ids text[],
                                           OUT what text, OUT ord integer,
                                           OUT doc jsonb, OUT revision bigint,
                                           OUT request jsonb)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dc_load_batch' LANGUAGE C STABLE;

-- A node's batch, fenced and written in one call (see store_batch.c):
-- NULL when written, else the shards found fenced (then nothing was written).
CREATE FUNCTION durable_cluster.write_batch(node_name text, shards integer[], epochs bigint[],
                                            mall_ids text[], user_ids text[],
                                            entity_shards integer[], states jsonb[],
                                            revisions bigint[], old_revisions bigint[],
                                            log_mall_ids text[] DEFAULT '{}',
                                            log_user_ids text[] DEFAULT '{}',
                                            command_ids text[] DEFAULT '{}',
                                            replies jsonb[] DEFAULT '{}',
                                            requests jsonb[] DEFAULT '{}',
                                            saga_records jsonb[] DEFAULT '{}',
                                            saga_steps text[] DEFAULT '{}')
RETURNS integer[]
AS 'MODULE_PATHNAME', 'dc_write_batch' LANGUAGE C VOLATILE;

-- The saga steps a batch applied, recorded by write_batch in its
-- transaction: records are {saga_id, from_mall, from_user, to_mall,
-- to_user, amount}, steps what was done to them.
CREATE FUNCTION durable_cluster.record_saga_steps(records jsonb[], steps text[]) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO durable_cluster.sagas AS s
           (saga_id, from_mall, from_user, to_mall, to_user, amount, step, status)
    SELECT r.saga_id, r.from_mall, r.from_user, r.to_mall, r.to_user, r.amount, u.step,
           CASE u.step WHEN 'added' THEN 'completed'
                       WHEN 'refunded' THEN 'compensated'
                       ELSE 'running' END
      FROM unnest(records, steps) AS u(record, step),
           pg_catalog.jsonb_populate_record(NULL::durable_cluster.sagas, u.record) AS r
    ON CONFLICT (saga_id) DO UPDATE
       SET step = excluded.step, status = excluded.status, updated_at = now()
$$;

-- A registered command's handler, run for a node in its batch's
-- transaction (user_command.c): the new state, or the error that undid it.
CREATE FUNCTION durable_cluster.run_command(name text, state jsonb, payload jsonb,
                                            OUT new_state jsonb, OUT sqlstate text,
                                            OUT message text)
RETURNS record
AS 'MODULE_PATHNAME', 'dc_run_command' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION durable_cluster.reconcile(integer, text, jsonb, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.run_command(text, jsonb, jsonb) FROM PUBLIC;

-- A command another server of the cluster forwards to this one, whose node
-- owns its shard (forward.c): as its client sent it, checked here again
-- as if it came from SQL.  Only for the cluster's own connections.
CREATE FUNCTION durable_cluster.forward(format integer, role_name text,
                                        mall_id text, user_id text, command text,
                                        payload jsonb, saga_record jsonb,
                                        tell boolean, timeout_ms integer) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_forward_sql' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION durable_cluster.load_batch(text[], text[], text[], text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.write_batch(text, integer[], bigint[], text[], text[],
                                                  integer[], jsonb[], bigint[], bigint[],
                                                  text[], text[], text[], jsonb[], jsonb[],
                                                  jsonb[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.record_saga_steps(jsonb[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.node_join(text, integer, text, integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.node_leaving(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION durable_cluster.node_leave(text, bigint, integer) FROM PUBLIC;

/*
 * Replace the shard map by number_of_shards unassigned shards (the caller
 * holds lock_map).  New shards start past every epoch used so far, so no
 * stale owner matches; the nodes pick the new map up at once.
 */
CREATE FUNCTION durable_cluster.reset_shards(number_of_shards integer) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH old AS (DELETE FROM durable_cluster.shards RETURNING epoch)
    INSERT INTO durable_cluster.shards (shard_id, node, epoch)
         SELECT g, NULL, (SELECT coalesce(max(epoch), 0) + 1 FROM old)
           FROM generate_series(0, number_of_shards - 1) g;
    UPDATE durable_cluster.settings SET map_version = map_version + 1;
    SELECT durable_cluster.wake_nodes_at_commit();
$$;

/*
 * pg_dump keeps the settings row (pg_extension_config_dump), and a restore
 * creates the extension, with its default row, before it copies the dumped
 * one.  That copy replaces the default row instead of failing on the
 * primary key, and the shard map gets the restored number of shards, so
 * that every restored entity is in the shard it was written to.
 */
CREATE FUNCTION durable_cluster.settings_restore() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM durable_cluster.settings) THEN
        RETURN NEW;
    END IF;
    PERFORM durable_cluster.lock_map();
    UPDATE durable_cluster.settings SET number_of_shards = NEW.number_of_shards;
    PERFORM durable_cluster.reset_shards(NEW.number_of_shards);
    PERFORM durable_cluster.announce(jsonb_build_object(
        'event', 'restored', 'number_of_shards', NEW.number_of_shards));
    RETURN NULL;
END
$$;
CREATE TRIGGER settings_restore BEFORE INSERT ON durable_cluster.settings
    FOR EACH ROW EXECUTE FUNCTION durable_cluster.settings_restore();

/* ---- SQL API ---- */

CREATE FUNCTION dc_send_command(mall_id text, user_id text, command text,
                                payload jsonb DEFAULT '{}')
RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_send_command' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc_send_command(text, text, text, jsonb) IS
    'apply a command to entity (mall_id, user_id) on the node owning its shard; replies after commit';

CREATE FUNCTION dc_tell(mall_id text, user_id text, command text, payload jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'dc_tell' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc_tell(text, text, text, jsonb) IS
    'fire and forget: returns once the node owning the entity''s shard has the command';

-- VOLATILE: it reads the newest committed state, not the statement's
-- snapshot, so its result may differ within one statement.
CREATE FUNCTION dc_get_state(mall_id text, user_id text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_get_state' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION dc_get_state(text, text) IS
    'newest committed state of an entity, as the command get_state replies it (revision 0: never stored)';

CREATE FUNCTION dc_shard_id(mall_id text, user_id text, number_of_shards integer DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'dc_shard_id' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION dc_shard_id(text, text, integer) IS
    'shard of an entity: abs(Java hashCode of mall_id-user_id) % number_of_shards, as Pekko';

CREATE FUNCTION dc_java_hashcode(text) RETURNS integer
AS 'MODULE_PATHNAME', 'dc_java_hashcode_sql' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION dc_java_hashcode(text) IS 'Java String.hashCode() of a text';

CREATE FUNCTION dc_set_number_of_shards(number_of_shards integer) RETURNS void
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
    UPDATE durable_cluster.settings s SET number_of_shards = dc_set_number_of_shards.number_of_shards;
    PERFORM durable_cluster.reset_shards(dc_set_number_of_shards.number_of_shards);
    PERFORM durable_cluster.reconcile(
        (extract(epoch FROM current_setting('durable_cluster.failure_timeout')::interval) * 1000)::integer);
END
$$;
REVOKE ALL ON FUNCTION dc_set_number_of_shards(integer) FROM PUBLIC;
COMMENT ON FUNCTION dc_set_number_of_shards(integer) IS
    'change the number of shards; refused once any entity state is stored';

CREATE FUNCTION dc_add_node(name text DEFAULT NULL, roles text[] DEFAULT '{}') RETURNS text
AS 'MODULE_PATHNAME', 'dc_add_node' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc_add_node(text, text[]) IS
    'start a node worker now; it joins and receives its share of shards';

CREATE FUNCTION dc_remove_node(name text) RETURNS void
AS 'MODULE_PATHNAME', 'dc_remove_node' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc_remove_node(text) IS
    'make a node leave gracefully: it hands its shards over and exits';

/*
 * The extension's roles (README, "Security"), shared by every database of
 * the server and kept when the extension is dropped:
 *
 *   dc_cluster  the cluster's own sessions: nodes and the saga worker, and
 *               the connections between servers.  It logs in (pg_hba.conf
 *               must let it, see README), is no superuser and may use only
 *               the internal tables and functions.
 *   dc_admin    operations: nodes, shards, registered commands, statistics;
 *               it is also a dc_client.
 *   dc_client   applications: the SQL API and the views.
 */
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'dc_cluster') THEN
        CREATE ROLE dc_cluster LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'dc_cluster'
                     AND (rolsuper OR rolcreaterole OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role dc_cluster exists and has SUPERUSER, CREATEROLE or BYPASSRLS'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The cluster''s sessions log in as dc_cluster: ALTER ROLE dc_cluster NOSUPERUSER NOCREATEROLE NOBYPASSRLS, then create the extension.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'dc_client') THEN
        CREATE ROLE dc_client NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'dc_admin') THEN
        CREATE ROLE dc_admin NOLOGIN;
    END IF;
END
$$;

/* Changing membership is for superusers and members of dc_admin. */
REVOKE ALL ON FUNCTION dc_add_node(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION dc_remove_node(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dc_add_node(text, text[]), dc_remove_node(text),
                          dc_set_number_of_shards(integer) TO dc_admin;

/*
 * A member's shards as compact ranges, e.g. '0-24,34-38'.  As its owner:
 * dc_members calls it for readers without privileges on the schema.
 */
CREATE FUNCTION durable_cluster.shard_ranges(node_name text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(CASE WHEN lo = hi THEN lo::text ELSE lo || '-' || hi END, ',' ORDER BY lo)
      FROM (SELECT min(shard_id) AS lo, max(shard_id) AS hi
              FROM (SELECT shard_id, shard_id - row_number() OVER (ORDER BY shard_id) AS run
                      FROM durable_cluster.shards WHERE node = node_name) s
             GROUP BY run) r
$$;

CREATE VIEW dc_members AS
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

CREATE VIEW dc_shards AS
SELECT shard_id, node, epoch FROM durable_cluster.shards ORDER BY shard_id;

/*
 * Client sessions of this server other than the calling node's kind
 * (smart shutdown waits for them, node.c).  As its owner: dc_cluster may
 * not see other roles' sessions in pg_stat_activity.
 */
CREATE FUNCTION durable_cluster.other_client_sessions() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*)::integer FROM pg_stat_activity
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
       AND NOT (usename = session_user AND application_name LIKE 'durable\_cluster %')
$$;

-- Workers of this server that should run and do not (stats.c).
CREATE FUNCTION durable_cluster.missing_workers() RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_missing_workers' LANGUAGE C VOLATILE;

CREATE FUNCTION dc_cluster_status() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT jsonb_build_object(
    'number_of_members', (SELECT count(*) FROM @extschema@.dc_members WHERE status = 'up'),
    'self_address', durable_cluster.self_address(),
    'self_roles', (SELECT coalesce(jsonb_agg(DISTINCT r), '[]')
                     FROM @extschema@.dc_members, unnest(roles) r
                    WHERE status = 'up' AND address = durable_cluster.self_address()),
    'number_of_shards', (SELECT number_of_shards FROM durable_cluster.settings),
    'missing_workers', durable_cluster.missing_workers(),
    'members', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'name', name, 'status', status, 'address', address,
                    'roles', to_jsonb(roles), 'incarnation', incarnation,
                    'shard_count', shard_count,
                    'shards', shards,
                    'heartbeat_age_ms',
                        round(extract(epoch FROM heartbeat_age) * 1000)::bigint)), '[]')
                  FROM @extschema@.dc_members))
$$;
COMMENT ON FUNCTION dc_cluster_status() IS
    'members, shard ownership and this server''s address, as Pekko''s getClusterStatus';

/* What the nodes of this server did (stats.c); counters since dc_stats_reset(). */
CREATE FUNCTION durable_cluster.node_stats(OUT node text, OUT entities_in_memory bigint,
                                           OUT commands bigint, OUT batches bigint,
                                           OUT passivations bigint,
                                           OUT last_batch_at timestamptz,
                                           OUT stats_reset timestamptz,
                                           OUT memory_bytes bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'dc_node_stats' LANGUAGE C VOLATILE;

CREATE VIEW dc_node_stats AS
SELECT node, entities_in_memory, commands, batches,
       round(commands::numeric / nullif(batches, 0), 2) AS avg_commands_per_batch,
       passivations, last_batch_at, stats_reset, memory_bytes
  FROM durable_cluster.node_stats();

CREATE FUNCTION dc_stats_reset() RETURNS void
AS 'MODULE_PATHNAME', 'dc_stats_reset' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc_stats_reset() IS
    'zero the counters of dc_node_stats for every node of this server';
REVOKE ALL ON FUNCTION dc_stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dc_stats_reset() TO dc_admin;

/* ---- commands without recompiling (user_command.c) ---- */

CREATE FUNCTION dc_register_command(name text, handler regprocedure) RETURNS void
AS 'MODULE_PATHNAME', 'dc_register_command' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc_register_command(text, regprocedure) IS
    'add a command whose handler (state jsonb, payload jsonb) RETURNS jsonb returns the new state';
CREATE FUNCTION dc_unregister_command(name text) RETURNS void
AS 'MODULE_PATHNAME', 'dc_unregister_command' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION dc_register_command(text, regprocedure) FROM PUBLIC;
REVOKE ALL ON FUNCTION dc_unregister_command(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dc_register_command(text, regprocedure),
                          dc_unregister_command(text) TO dc_admin;

/* ---- tenants (tenant.c) ---- */

CREATE FUNCTION dc_restrict_role(role regrole, malls text[], commands text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF role IS NULL OR malls IS NULL THEN
        RAISE EXCEPTION 'role and malls must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF cardinality(malls) = 0 THEN
        RAISE EXCEPTION 'a restricted role needs at least one mall'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'To keep a role from every mall, revoke dc_client from it.';
    END IF;
    IF array_position(malls, NULL) IS NOT NULL OR array_position(commands, NULL) IS NOT NULL
       OR EXISTS (SELECT FROM unnest(malls) m WHERE m = '') THEN
        RAISE EXCEPTION 'malls and commands must not contain NULL or empty names'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE oid = role) THEN
        RAISE EXCEPTION 'superuser % cannot be restricted', role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the role's name as the check sees it (regrole's text is quoted)
    DELETE FROM durable_cluster.tenant_grants WHERE role_name = pg_get_userbyid(role);
    INSERT INTO durable_cluster.tenant_grants (role_name, mall_id, commands)
         SELECT DISTINCT pg_get_userbyid(role), m, commands FROM unnest(malls) m;
END
$$;
COMMENT ON FUNCTION dc_restrict_role(regrole, text[], text[]) IS
    'let role reach only the entities of these malls, with these commands (NULL: any)';

CREATE FUNCTION dc_unrestrict_role(role regrole) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM durable_cluster.tenant_grants WHERE role_name = pg_get_userbyid(role);
$$;
COMMENT ON FUNCTION dc_unrestrict_role(regrole) IS
    'let role reach every mall again';

CREATE VIEW dc_tenant_grants AS
SELECT role_name, mall_id, commands FROM durable_cluster.tenant_grants;

/*
 * May role_name send command to an entity of mall_id?  For servers whose
 * store is another (tenant.c asks the store).
 */
CREATE FUNCTION durable_cluster.tenant_allows(role_name text, mall_id text, command text)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NOT EXISTS (SELECT FROM durable_cluster.tenant_grants g
                        WHERE g.role_name = tenant_allows.role_name)
        OR EXISTS (SELECT FROM durable_cluster.tenant_grants g
                    WHERE g.role_name = tenant_allows.role_name
                      AND g.mall_id = tenant_allows.mall_id
                      AND (g.commands IS NULL OR tenant_allows.command = ANY (g.commands)))
$$;

CREATE VIEW dc_commands AS
SELECT c.name, c.handler, p.proowner::regrole AS runs_as, c.registered_by, c.registered_at
  FROM durable_cluster.commands c
  LEFT JOIN pg_catalog.pg_proc p ON p.oid = c.handler;

/* ---- transfers that survive crashes (saga.c) ---- */

CREATE FUNCTION dc_transfer(from_mall text, from_user text, to_mall text, to_user text,
                            amount numeric) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_transfer' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc_transfer(text, text, text, text, numeric) IS
    'move amount from one entity''s balance to another''s: deduct, add, refund if the add is rejected';

-- Commands sent with dc_send_command_at_commit (at_commit.c): written in
-- their caller's transaction, sent on by this server's saga worker after
-- it committed, and kept with their outcome for at_commit_retention.
CREATE TABLE durable_cluster.pending_commands (
    id           bigint PRIMARY KEY,
    mall_id      text NOT NULL,
    user_id      text NOT NULL,
    command      text NOT NULL,
    payload      jsonb NOT NULL,
    command_id   text NOT NULL,
    role_name    text NOT NULL,          -- who sent it: it is sent on as them
    submitted_at timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'done', 'failed')),
    reply        jsonb,                  -- done: the node's reply
    sqlstate     text,                   -- failed: the error
    message      text,
    done_at      timestamptz,
    UNIQUE (mall_id, user_id, command_id)
);
CREATE SEQUENCE durable_cluster.pending_commands_id_seq OWNED BY durable_cluster.pending_commands.id;
CREATE INDEX pending_commands_pending ON durable_cluster.pending_commands (id)
    WHERE status = 'pending';
CREATE INDEX pending_commands_done ON durable_cluster.pending_commands (done_at)
    WHERE status <> 'pending';
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.pending_commands', '');
SELECT pg_catalog.pg_extension_config_dump('durable_cluster.pending_commands_id_seq', '');

CREATE FUNCTION dc_send_command_at_commit(mall_id text, user_id text, command text,
                                          payload jsonb DEFAULT '{}') RETURNS text
AS 'MODULE_PATHNAME', 'dc_send_command_at_commit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION dc_send_command_at_commit(text, text, text, jsonb) IS
    'a command applied once after the calling transaction commits, never if it rolls back; returns its command_id';

CREATE FUNCTION dc_command_outcome(mall_id text, user_id text, command_id text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'dc_command_outcome' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dc_command_outcome(text, text, text) IS
    'status (pending, done, failed), reply or error of a command sent with dc_send_command_at_commit';

CREATE VIEW dc_sagas AS
SELECT saga_id, from_mall, from_user, to_mall, to_user, amount, step, status,
       created_at, updated_at
  FROM durable_cluster.sagas;

/* ---- privileges (README, "Security") ---- */

-- Nothing that changes state or reads an entity is PUBLIC's; the internal
-- functions are the cluster's only.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA durable_cluster FROM PUBLIC;
REVOKE ALL ON FUNCTION dc_restrict_role(regrole, text[], text[]),
                       dc_unrestrict_role(regrole) FROM PUBLIC;
REVOKE ALL ON FUNCTION dc_send_command(text, text, text, jsonb),
                       dc_tell(text, text, text, jsonb),
                       dc_get_state(text, text),
                       dc_transfer(text, text, text, text, numeric),
                       dc_send_command_at_commit(text, text, text, jsonb),
                       dc_command_outcome(text, text, text),
                       dc_cluster_status() FROM PUBLIC;

GRANT USAGE ON SCHEMA durable_cluster TO dc_cluster;
GRANT SELECT, INSERT, UPDATE, DELETE
   ON durable_cluster.members, durable_cluster.shards, durable_cluster.entity_state,
      durable_cluster.command_log, durable_cluster.sagas TO dc_cluster;
GRANT SELECT, UPDATE ON durable_cluster.settings TO dc_cluster;
GRANT SELECT ON durable_cluster.commands, durable_cluster.tenant_grants TO dc_cluster;
GRANT SELECT, UPDATE, DELETE ON durable_cluster.pending_commands TO dc_cluster;
GRANT USAGE, SELECT ON SEQUENCE durable_cluster.command_log_seq, durable_cluster.saga_seq
   TO dc_cluster;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA durable_cluster TO dc_cluster;
-- a server whose store is another reads entities there with this
GRANT EXECUTE ON FUNCTION dc_get_state(text, text) TO dc_cluster;

GRANT EXECUTE ON FUNCTION dc_send_command(text, text, text, jsonb),
                          dc_tell(text, text, text, jsonb),
                          dc_get_state(text, text),
                          dc_transfer(text, text, text, text, numeric),
                          dc_send_command_at_commit(text, text, text, jsonb),
                          dc_command_outcome(text, text, text),
                          dc_cluster_status() TO dc_client;
-- what the views call runs with their reader's privileges
GRANT EXECUTE ON FUNCTION durable_cluster.shard_ranges(text),
                          durable_cluster.node_stats() TO dc_client;
GRANT SELECT ON dc_members, dc_shards, dc_node_stats, dc_commands TO dc_client;

GRANT dc_client TO dc_admin;
GRANT EXECUTE ON FUNCTION dc_restrict_role(regrole, text[], text[]),
                          dc_unrestrict_role(regrole) TO dc_admin;
GRANT SELECT ON dc_tenant_grants TO dc_admin;
-- transfers name the entities of every mall
GRANT SELECT ON dc_sagas TO dc_admin;
