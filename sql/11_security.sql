--
-- Trust: what an ordinary role can do to the cluster, tried as one.
--
-- Roles: sec_attacker has CREATE on public (the default in databases made
-- before PostgreSQL 15) and nothing of the extension; sec_client is an
-- application's role (dc_client); sec_tenant_a and sec_tenant_c are
-- restricted to some malls.
--
SET client_min_messages = warning;
DROP ROLE IF EXISTS sec_attacker;
DROP ROLE IF EXISTS sec_client;
DROP ROLE IF EXISTS sec_tenant_a;
DROP ROLE IF EXISTS sec_tenant_c;
RESET client_min_messages;
CREATE ROLE sec_attacker;
CREATE ROLE sec_client IN ROLE dc_client;
CREATE ROLE sec_tenant_a IN ROLE dc_client;
CREATE ROLE sec_tenant_c IN ROLE dc_client;
GRANT CREATE ON SCHEMA public TO sec_attacker;

-- ---- every function of the extension pins its search_path, or is C ----
SELECT p.oid::regprocedure AS unpinned
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass
  JOIN pg_language l ON l.oid = p.prolang
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'durable_cluster')
   AND d.deptype = 'e' AND l.lanname <> 'c'
   AND NOT coalesce(p.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}'
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- ---- nothing that changes state or reads entities is PUBLIC's ----
-- (what is: the shard functions, and dc.version(), which shows versions)
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'durable_cluster')
   AND d.deptype = 'e'
   AND (p.proacl IS NULL
        OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- ---- no session of the cluster runs as a superuser ----
SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'dc_cluster';
SELECT count(*) > 0 AS cluster_sessions,
       count(*) FILTER (WHERE r.rolsuper) AS superuser_sessions,
       count(*) FILTER (WHERE a.usename <> 'dc_cluster') AS other_users
  FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.application_name LIKE 'durable\_cluster %';

-- ---- superuser by search_path: a shadowing function never runs ----
-- make_interval(numeric) matches reconcile()'s call better than the
-- built-in make_interval(..., double precision); it would make the
-- attacker a superuser and record where it ran.
CREATE TABLE public.sec_ran_as (who text, path text);
GRANT INSERT ON public.sec_ran_as TO PUBLIC;
SET ROLE sec_attacker;
CREATE FUNCTION public.make_interval(secs numeric) RETURNS interval
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sec_ran_as VALUES (session_user, current_setting('search_path'));
    EXECUTE 'ALTER ROLE sec_attacker SUPERUSER';
    RETURN pg_catalog.make_interval(secs => secs::double precision);
END
$$;
RESET ROLE;
-- wait, with a deadline, for every node to have run n more heartbeats
-- (each heartbeat is followed by a reconcile)
CREATE FUNCTION wait_heartbeats(n int) RETURNS text
LANGUAGE sql AS $$
    SELECT wait_until(format($q$
        SELECT bool_and(last_heartbeat > %L::timestamptz + %s * interval '1 second')
          FROM dc.members WHERE status = 'up' $q$, clock_timestamp(), n - 1))
$$;
SELECT wait_heartbeats(3);
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'sec_attacker';
SELECT count(*) AS shadow_function_ran FROM public.sec_ran_as;
DROP FUNCTION public.make_interval(numeric);

-- ---- the API cannot be shadowed ----
-- it lives in dc, where only the extension's owner can create objects
SELECT nspowner = (SELECT extowner FROM pg_extension WHERE extname = 'durable_cluster') AS owned_by_extension_owner,
       has_schema_privilege('sec_attacker', oid, 'CREATE') AS attacker_may_create
  FROM pg_namespace WHERE nspname = 'dc';
SET ROLE sec_attacker;
CREATE FUNCTION dc.send_command(text, text, text, text) RETURNS jsonb
LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
RESET ROLE;
-- an attacker with CREATE on public and on the database adds the
-- overloads that beat the extension's functions for calls with literals
-- (a payload as text, an amount as integer) and, in a schema named after
-- the role that calls them (first on the default search_path), one for
-- every other form; each would make it a superuser
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO sec_attacker', current_database()); END $$;
SET ROLE sec_attacker;
CREATE FUNCTION public.sec_capture(what text) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sec_ran_as VALUES (session_user, what);
    EXECUTE 'ALTER ROLE sec_attacker SUPERUSER';
    RETURN '{"captured": true}';
END
$$;
CREATE FUNCTION public.dc_send_command(text, text, text, text) RETURNS jsonb
LANGUAGE sql AS $$ SELECT public.sec_capture('dc_send_command') $$;
CREATE FUNCTION public.dc_transfer(text, text, text, text, integer) RETURNS jsonb
LANGUAGE sql AS $$ SELECT public.sec_capture('dc_transfer') $$;
DO $$ BEGIN EXECUTE format('CREATE SCHEMA %I', session_user); END $$;
DO $$
BEGIN
    EXECUTE format($f$CREATE FUNCTION %I.dc_send_command(text, text, text) RETURNS jsonb
                      LANGUAGE sql AS 'SELECT public.sec_capture(''$user'')'$f$, session_user);
    EXECUTE format($f$CREATE FUNCTION %I.send_command(text, text, text, text) RETURNS jsonb
                      LANGUAGE sql AS 'SELECT public.sec_capture(''$user'')'$f$, session_user);
END
$$;
RESET ROLE;
-- the documented calls, run by a superuser with the default search_path,
-- reach the extension
SELECT dc.send_command('mall_a', 'shadow', 'login') ->> 'result' AS login;
SELECT dc.send_command('mall_a', 'shadow', 'update_profile', '{"nickname": "Alice"}') ->> 'result' AS profile;
SELECT dc.send_command('mall_a', 'shadow', 'add_balance', '{"amount": 10}') ->> 'result' AS balance;
SELECT dc.transfer('mall_a', 'shadow', 'mall_a', 'shadow2', 10) ->> 'status' AS transfer;
SELECT dc.get_state('mall_a', 'shadow2') #>> '{state,balance}' AS moved;
SELECT rolsuper AS attacker_is_superuser FROM pg_roles WHERE rolname = 'sec_attacker';
SELECT count(*) AS capture_ran FROM public.sec_ran_as;
-- the short names of 0.1 and 0.2 are what it captures (planned, not run)
EXPLAIN (VERBOSE, COSTS OFF)
SELECT dc_send_command('mall_a', 'shadow', 'update_profile', '{"nickname": "Alice"}');
-- which is what the extension warns about, where others can create
SELECT * FROM durable_cluster.api_exposure();
SELECT dc.cluster_status() -> 'schemas_others_can_create_in' AS warned;
SET client_min_messages = warning;
DO $$ BEGIN EXECUTE format('DROP SCHEMA %I CASCADE', session_user); END $$;
RESET client_min_messages;
DROP FUNCTION public.dc_send_command(text, text, text, text);
DROP FUNCTION public.dc_transfer(text, text, text, text, integer);
DROP FUNCTION public.sec_capture(text);
DO $$ BEGIN EXECUTE format('REVOKE CREATE ON DATABASE %I FROM sec_attacker', current_database()); END $$;

-- ---- nobody else can hold the lock that serialises failover ----
SET ROLE sec_attacker;
SELECT FROM durable_cluster.settings FOR UPDATE;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
-- the advisory lock earlier versions used is no longer anything's
SELECT pg_advisory_lock(7310145832764101);
RESET ROLE;
SELECT dc.add_node('sec-node');
SELECT wait_for_cluster(4, 100);
SELECT dc.remove_node('sec-node');
SELECT wait_for_cluster(3, 100);
SELECT pg_advisory_unlock_all();

-- ---- an ordinary role cannot use the API ----
SET ROLE sec_attacker;
SELECT dc.send_command('mall_a', 'u1', 'login');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.tell('mall_a', 'u1', 'login');
SELECT dc.get_state('mall_a', 'u1');
SELECT dc.transfer('mall_a', 'u1', 'mall_a', 'u2', 1);
SELECT durable_cluster.reconcile(1);
SELECT durable_cluster.forward(1, 'x', 'mall_a', 'u1', 'login', '{}', NULL, false, 100);
RESET ROLE;

-- ---- a client can, without privileges on the schema ----
SET ROLE sec_client;
SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": 10}') -> 'state' -> 'balance' AS balance;
SELECT dc.send_command('mall_b', 'u1', 'add_balance', '{"amount": 20, "command_id": "b-1"}') -> 'state' -> 'balance' AS balance;
SELECT dc.tell('mall_b', 'u2', 'login');
SELECT dc.get_state('mall_a', 'u1') -> 'state' -> 'balance' AS balance;
SELECT dc.shard_id('mall_a', 'u1') = dc.shard_id('mall_a', 'u1', 100) AS shard_id_ok;
SELECT dc.cluster_status() -> 'number_of_shards' AS number_of_shards,
       dc.cluster_status() -> 'missing_workers' AS missing_workers;
SELECT count(*) AS members, count(shards) AS with_shards FROM dc.members WHERE status = 'up';
SELECT (SELECT string_agg(shards, ',') FROM dc.members) IS NOT NULL AS shard_ranges_read;
SELECT count(*) AS shards FROM dc.shards;
SELECT count(*) AS nodes FROM dc.node_stats;
-- but not the tables, which hold every mall
SELECT count(*) FROM durable_cluster.entity_state;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT count(*) FROM dc.sagas;
RESET ROLE;

-- ---- tenant isolation ----
SELECT dc.restrict_role('sec_tenant_a', '{mall_a}');
SELECT dc.restrict_role('sec_tenant_c', '{mall_a,mall_c}', '{get_state,login}');
SELECT * FROM dc.tenant_grants WHERE role_name LIKE 'sec\_%' ORDER BY 1, 2;
SET ROLE sec_tenant_a;
SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": 1}') -> 'state' -> 'balance' AS balance;
SELECT dc.get_state('mall_a', 'u1') -> 'state' -> 'balance' AS balance;
-- every way into mall_b is closed, and nothing is applied
SELECT dc.send_command('mall_b', 'u1', 'deduct_balance', '{"amount": 20}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.send_command('mall_b', 'u1', 'get_state');
SELECT dc.send_command('mall_b', 'u1', 'update_profile', '{"nickname": "mallory"}');
SELECT dc.tell('mall_b', 'u1', 'logout');
SELECT dc.get_state('mall_b', 'u1');
-- a logged reply is no way in either
SELECT dc.send_command('mall_b', 'u1', 'add_balance', '{"amount": 20, "command_id": "b-1"}');
-- both sides of a transfer
SELECT dc.transfer('mall_b', 'u1', 'mall_a', 'u1', 5);
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.transfer('mall_a', 'u1', 'mall_b', 'u1', 5);
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
-- within mall_a a transfer goes through
SELECT dc.transfer('mall_a', 'u1', 'mall_a', 'u9', 2) ->> 'status' AS status;
RESET ROLE;
SELECT dc.get_state('mall_b', 'u1') #- '{state,last_event_time}' AS mall_b_untouched;
SELECT count(*) AS mall_b_transfers FROM dc.sagas WHERE 'mall_b' IN (from_mall, to_mall);

-- restricted to some commands too
SET ROLE sec_tenant_c;
SELECT dc.send_command('mall_c', 'u1', 'login') ->> 'result' AS result;
SELECT dc.send_command('mall_c', 'u1', 'add_balance', '{"amount": 1}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.get_state('mall_c', 'u1') -> 'state' -> 'balance' AS balance;
SELECT dc.send_command('mall_b', 'u1', 'login');
RESET ROLE;

-- ---- restrictions follow the login: SET ROLE, SECURITY DEFINER ----
-- sec_tenant_a logs in (SET SESSION AUTHORIZATION stands for its login)
-- and becomes dc_client, which the documented set-up makes it a member
-- of; every way into mall_b is still closed, and nothing is applied
CREATE SCHEMA sec_tenant_fns AUTHORIZATION sec_tenant_a;
GRANT CREATE ON SCHEMA sec_tenant_fns TO dc_client;
SET SESSION AUTHORIZATION sec_tenant_a;
SET ROLE dc_client;
SELECT session_user, current_user;
SELECT try($$SELECT dc.get_state('mall_b', 'u1')$$);
SELECT try($$SELECT dc.send_command('mall_b', 'u1', 'deduct_balance', '{"amount": 1}')$$);
SELECT try($$SELECT dc.send_command('mall_b', 'u1', 'add_balance', '{"amount": 20, "command_id": "b-1"}')$$);
SELECT try($$SELECT dc.tell('mall_b', 'u1', 'logout')$$);
SELECT try($$SELECT dc.transfer('mall_b', 'u1', 'mall_a', 'u1', 5)$$);
SELECT try($$SELECT dc.send_command_at_commit('mall_b', 'u1', 'add_balance', '{"amount": 1}')$$);
SELECT try($$SELECT dc.command_outcome('mall_b', 'u1', 'b-1', 'get_state')$$);
SELECT try($$SELECT * FROM dc.send_commands('[{"mall_id": "mall_b", "user_id": "u1", "command": "get_state"}]')$$);
-- its own mall it reaches as before
SELECT dc.send_command('mall_a', 'u1', 'get_state') ->> 'result' AS own_mall;
RESET ROLE;
-- a SECURITY DEFINER function it gives to dc_client runs as dc_client,
-- and still for sec_tenant_a's login
CREATE FUNCTION sec_tenant_fns.peek() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT dc.get_state('mall_b', 'u1')
$$;
ALTER FUNCTION sec_tenant_fns.peek() OWNER TO dc_client;
SELECT try($$SELECT sec_tenant_fns.peek()$$);
RESET SESSION AUTHORIZATION;
DROP SCHEMA sec_tenant_fns CASCADE;
SELECT dc.get_state('mall_b', 'u1') #- '{state,last_event_time}' AS mall_b_untouched;
-- a command recorded at commit for roles of which one may not reach its
-- mall (restricted after it was recorded): the saga worker checks the
-- roles again when it sends it, and it fails without being applied
INSERT INTO durable_cluster.pending_commands (id, mall_id, user_id, command, payload, command_id,
                                              role_name, roles)
VALUES (nextval('durable_cluster.pending_commands_id_seq'), 'mall_b', 'u1', 'add_balance',
        '{"amount": 7}', 'sec-at-commit', 'sec_client', '{sec_client,sec_tenant_a}');
-- (the worker looks every heartbeat_interval)
SELECT wait_until($$SELECT status <> 'pending' FROM durable_cluster.pending_commands
                    WHERE command_id = 'sec-at-commit'$$);
SELECT status, sqlstate, message FROM durable_cluster.pending_commands WHERE command_id = 'sec-at-commit';
SELECT dc.get_state('mall_b', 'u1') #>> '{state,balance}' AS mall_b_balance;

-- a forwarded command is checked for the role that sent it, too
SET ROLE dc_cluster;
SELECT try($$SELECT durable_cluster.forward(1, 'sec_tenant_a', 'mall_b', 'u1', 'get_state', '{}', NULL, false, 1000)$$);
-- and for every role it acts as (format 2)
SELECT try($$SELECT durable_cluster.forward(2, '{sec_tenant_a,dc_client}', 'mall_b', 'u1', 'get_state', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(2, '{dc_client,sec_tenant_a}', 'mall_b', 'u1', 'get_state', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(2, '{sec_tenant_a,dc_client}', 'mall_a', 'u1', 'get_state', '{}', NULL, false, 1000)$$) AS own_mall;
RESET ROLE;

-- a role whose name needs quoting is restricted all the same
CREATE ROLE "Sec-Tenant-Q" IN ROLE dc_client;
SELECT dc.restrict_role('"Sec-Tenant-Q"', '{mall_a}');
SELECT role_name FROM dc.tenant_grants WHERE role_name LIKE 'Sec-%';
SET ROLE "Sec-Tenant-Q";
SELECT dc.get_state('mall_b', 'u1');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
RESET ROLE;
SELECT dc.unrestrict_role('"Sec-Tenant-Q"');
SELECT count(*) AS grants_left FROM dc.tenant_grants WHERE role_name LIKE 'Sec-%';
DROP ROLE "Sec-Tenant-Q";

-- restricting is checked; lifting it opens every mall again
SELECT dc.restrict_role('sec_tenant_a', '{}');
SELECT dc.restrict_role('sec_tenant_a', '{mall_a,NULL}');
CREATE ROLE sec_super SUPERUSER;
SELECT dc.restrict_role('sec_super', '{mall_a}');
DROP ROLE sec_super;
SELECT try($$SELECT dc.restrict_role('-', '{mall_a}')$$);
SELECT try($$SELECT dc.restrict_role(99999999::oid::regrole, '{mall_a}')$$);
-- malls are ids, commands exist
SELECT try($$SELECT dc.restrict_role('sec_tenant_a', ARRAY[E'mall\nb'])$$);
SELECT try($$SELECT dc.restrict_role('sec_tenant_a', ARRAY[U&'mall\200Bb'])$$);
SELECT try($$SELECT dc.restrict_role('sec_tenant_a', ARRAY[repeat('m', 10000)])$$);
SELECT try($$SELECT dc.restrict_role('sec_tenant_a', '{mall_a}', '{get_state,teleport}')$$);
SELECT try($$SELECT dc.restrict_role('sec_tenant_a', '{mall_a}', ARRAY[E'log\nin'])$$);
-- a role that could lift its own restriction is refused
CREATE ROLE sec_ops IN ROLE dc_admin;
CREATE ROLE sec_maker CREATEROLE;
CREATE ROLE sec_can_make IN ROLE sec_maker;
SELECT try($$SELECT dc.restrict_role('sec_ops', '{mall_a}')$$);
SELECT try($$SELECT dc.restrict_role('sec_maker', '{mall_a}')$$);
SELECT try($$SELECT dc.restrict_role('sec_can_make', '{mall_a}')$$);
DROP ROLE sec_ops, sec_can_make, sec_maker;
SELECT * FROM dc.tenant_grants WHERE role_name LIKE 'sec\_%' ORDER BY 1, 2;
SET ROLE sec_client;
SELECT dc.restrict_role('sec_client', '{mall_a}');
RESET ROLE;
SELECT dc.unrestrict_role('sec_tenant_a');
SET ROLE sec_tenant_a;
SELECT dc.get_state('mall_b', 'u1') -> 'state' -> 'balance' AS balance;
RESET ROLE;
SELECT dc.unrestrict_role('sec_tenant_c');

-- ---- forward() checks what another server sends as if it came from SQL ----
SET ROLE dc_cluster;
SELECT try($$SELECT durable_cluster.forward(3, 'sec_client', 'mall_a', 'u1', 'login', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(2, 'sec_client', 'mall_a', 'u1', 'login', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(2, '{a,b,c,d}', 'mall_a', 'u1', 'login', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(2, '{sec_client,NULL}', 'mall_a', 'u1', 'login', '{}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'add_balance', '{"amount": -5}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', E'u\x01', 'login', '{}', NULL, false, 1000)$$);
-- a transfer's step only with its saga's record, for the record's entity and amount
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'add_balance', '{"amount": 5, "command_id": "saga-9-add"}', NULL, false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'add_balance', '{"amount": 5, "command_id": "saga-9-add"}',
    '{"saga_id": 9, "from_mall": "mall_a", "from_user": "u2", "to_mall": "mall_a", "to_user": "u3", "amount": 5}', false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'add_balance', '{"amount": 5, "command_id": "saga-9-add"}',
    '{"saga_id": 9, "from_mall": "mall_a", "from_user": "u2", "to_mall": "mall_a", "to_user": "u1", "amount": 500}', false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'add_balance', '{"amount": 5, "command_id": "saga-8-add"}',
    '{"saga_id": 9, "from_mall": "mall_a", "from_user": "u2", "to_mall": "mall_a", "to_user": "u1", "amount": 5}', false, 1000)$$);
SELECT try($$SELECT durable_cluster.forward(1, 'sec_client', 'mall_a', 'u1', 'refund_balance', '{"amount": 5, "command_id": "saga-9-refund"}',
    '{"saga_id": 9, "from_mall": "mall_a", "from_user": "u2", "to_mall": "mall_a", "to_user": "u1", "amount": 5}', false, 1000)$$);
RESET ROLE;
SELECT count(*) AS saga_9_rows FROM durable_cluster.sagas WHERE saga_id = 9;

-- ---- a registered handler never sees a superuser session ----
CREATE FUNCTION sec_whoami(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT state || jsonb_build_object('session_user', session_user::text,
                                       'session_superuser', (SELECT rolsuper FROM pg_roles
                                                              WHERE rolname = session_user))
$$;
SELECT dc.register_command('sec_whoami', 'sec_whoami(jsonb, jsonb)');
SELECT r -> 'state' ->> 'session_user' AS handler_session_user,
       r -> 'state' ->> 'session_superuser' AS session_superuser
  FROM dc.send_command('mall_a', 'who', 'sec_whoami') r;
SELECT dc.unregister_command('sec_whoami');
DROP FUNCTION sec_whoami(jsonb, jsonb);

-- ---- strict input: one number grammar, no control characters ----
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": " 5 "}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "+5"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": ".5"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "5."}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "05"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "\t7\n"}')$$) LIKE '22P02:%' AS rejected;
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "-1e13"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": -0.01}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "1e13"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "1e-3"}')$$);
SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "0.5e1"}') -> 'state' -> 'balance' AS balance;
SELECT try($$SELECT dc.send_command(E'mall\x01a', 'u1', 'login')$$);
SELECT try($$SELECT dc.send_command('mall_a', E'u\u202E1', 'login')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'update_profile', '{"nickname": "a\nb"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'update_profile', '{"nickname": "\u2066x"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'login', '{"command_id": "a\tb"}')$$);
SELECT try($$SELECT dc.transfer('mall_a', E'u\x7f', 'mall_a', 'u2', 1)$$);
SELECT try($$SELECT dc.add_node(E'node\nx')$$);
SELECT try($$SELECT dc.add_node('n', ARRAY[U&'role\200Fx'])$$);
-- format characters, separators and invisible fillers too
SELECT try($$SELECT dc.send_command('mall_a', U&'u\200B1', 'login')$$);
SELECT try($$SELECT dc.send_command(U&'mall\00ADa', 'u1', 'login')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'update_profile', '{"nickname": "a\u2028b"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'update_profile', '{"nickname": "\u3164"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'login', '{"command_id": "\ufeffk1"}')$$);
SELECT try($$SELECT dc.send_command('mall_a', U&'u\2060', 'login')$$);
-- emoji with a variation selector are names like any other
SELECT dc.send_command('mall_a', 'u1', 'update_profile', '{"nickname": "\u2764\ufe0f"}') #>> '{state,nickname}' AS nickname;
-- what a user wrote reaches messages quoted, escaped and cut short
SELECT try($$SELECT dc.send_command('mall_a', 'u1', E'log\nLOG:  forged')$$);
SELECT try(format($$SELECT dc.send_command('mall_a', 'u1', %L)$$, repeat('x', 500)));
SELECT try($$SELECT dc.send_command('mall_a', 'u1', 'add_balance', '{"amount": "1\n2"}')$$);
SELECT dc.get_state('mall_a', 'u1') -> 'state' -> 'balance' AS balance;

-- ---- reads of ids nobody stored take no place in the nodes' caches ----
SELECT sum(entities_in_memory) AS cached_before FROM dc.node_stats \gset
SELECT count(*) AS read FROM (SELECT dc.send_command('sec_ghosts', 'g' || g, 'get_state')
                                FROM generate_series(1, 200) g) s;
SELECT count(*) AS refused FROM (SELECT dc.send_command('sec_ghosts', 'g' || g, 'deduct_balance', '{"amount": 1}')
                                   FROM generate_series(1, 50) g) s;
SELECT wait_until(format('SELECT sum(entities_in_memory) = %s FROM dc.node_stats', :cached_before)) AS cache_unchanged;
SELECT count(*) AS stored FROM durable_cluster.entity_state WHERE mall_id = 'sec_ghosts';

-- ---- a missing settings row: a clear error for the nodes, no crash ----
CREATE TEMP TABLE node_pids AS
SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'durable_cluster node%';
CREATE TEMP TABLE saved_settings AS SELECT * FROM durable_cluster.settings;
DELETE FROM durable_cluster.settings;
SELECT wait_heartbeats(3);
SELECT count(*) = (SELECT count(*) FROM node_pids) AS nodes_still_running
  FROM pg_stat_activity
 WHERE backend_type LIKE 'durable_cluster node%' AND pid IN (SELECT pid FROM node_pids);
SELECT dc.send_command('mall_a', 'u1', 'get_state') ->> 'result' AS still_serving;
INSERT INTO durable_cluster.settings SELECT * FROM saved_settings;
SELECT number_of_shards FROM durable_cluster.settings;
SELECT wait_for_cluster(3, 100);

-- ---- clean up ----
DELETE FROM durable_cluster.entity_state WHERE mall_id IN ('mall_a', 'mall_b', 'mall_c');
DELETE FROM durable_cluster.command_log WHERE mall_id IN ('mall_a', 'mall_b', 'mall_c');
DELETE FROM durable_cluster.sagas WHERE from_mall IN ('mall_a', 'mall_b', 'mall_c');
DELETE FROM durable_cluster.pending_commands WHERE mall_id IN ('mall_a', 'mall_b', 'mall_c');
DROP TABLE public.sec_ran_as;
DROP FUNCTION wait_heartbeats(int);
REVOKE CREATE ON SCHEMA public FROM sec_attacker;
DROP ROLE sec_attacker;
DROP ROLE sec_client;
DROP ROLE sec_tenant_a;
DROP ROLE sec_tenant_c;
