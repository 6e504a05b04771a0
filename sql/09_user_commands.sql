--
-- Commands without recompiling: a PL/pgSQL handler registered with
-- dc.register_command() returns the entity's new state.  Its errors fail
-- only its command, it runs as the role that registered it with a fixed
-- search_path, and what it returns is checked.
--
SET client_min_messages = warning;
DROP ROLE IF EXISTS uc_admin;
DROP ROLE IF EXISTS uc_user;
RESET client_min_messages;
CREATE ROLE uc_admin IN ROLE dc_admin;
CREATE ROLE uc_user;
GRANT CREATE ON SCHEMA public TO uc_admin;

-- the original's "update_profile" tutorial, as a handler of uc_admin's
CREATE TABLE profile_audit (mall_id text, user_id text, email text, by_role text);
GRANT INSERT ON profile_audit TO uc_admin;
SET ROLE uc_admin;
CREATE FUNCTION set_email(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(payload ->> 'email', '') NOT LIKE '%_@_%' THEN
        RAISE EXCEPTION 'set_email needs an "email" such as "a@example.com"'
              USING ERRCODE = 'check_violation';
    END IF;
    -- written in the node's transaction: kept only if the command is
    INSERT INTO public.profile_audit
    VALUES (state ->> 'mall_id', state ->> 'user_id', payload ->> 'email', current_user);
    IF payload ? 'unqualified' THEN
        -- public is not on the handler's search_path
        PERFORM dc_shard_id('a', 'b');
    END IF;
    IF payload ? 'fail_after_write' THEN
        RAISE EXCEPTION 'failed after writing' USING ERRCODE = 'raise_exception';
    END IF;
    RETURN state || jsonb_build_object('email', payload ->> 'email',
                                       'search_path', current_setting('search_path'));
END
$$;
SELECT dc.register_command('set_email', 'set_email(jsonb, jsonb)');
RESET ROLE;
SELECT name, handler, runs_as, registered_by FROM dc.commands;

SELECT show(dc.send_command('uc', 'u1', 'login'));
SELECT show(dc.send_command('uc', 'u1', 'set_email', '{"email": "u1@example.com"}'));
-- the handler ran as its owner, uc_admin, with the fixed search_path
SELECT * FROM profile_audit;
-- its keys are kept, in the store and in the node's memory
SELECT dc.get_state('uc', 'u1') -> 'state' ->> 'email' AS stored_email;
SELECT show(dc.send_command('uc', 'u1', 'add_balance', '{"amount": 5}')) -> 'state' ->> 'email' AS email_after_login;

-- the handler's error is the command's: its SQLSTATE and message, nothing
-- changed, and what the handler wrote is undone
\set VERBOSITY terse
SELECT try($$SELECT dc.send_command('uc', 'u1', 'set_email', '{"email": "nope"}')$$);
SELECT try($$SELECT dc.send_command('uc', 'u1', 'set_email', '{"email": "x@example.com", "fail_after_write": true}')$$);
SELECT try($$SELECT dc.send_command('uc', 'u1', 'set_email', '{"email": "y@example.com", "unqualified": true}')$$);
SELECT count(*) AS audit_rows FROM profile_audit;
SELECT dc.get_state('uc', 'u1') -> 'revision' AS revision, dc.get_state('uc', 'u1') -> 'state' ->> 'email' AS email;

-- returning the same state changes nothing: no new revision
SELECT dc.send_command('uc', 'u1', 'set_email', '{"email": "u1@example.com"}') -> 'revision' AS revision;

-- a command_id makes a registered command idempotent as well
SELECT dc.send_command('uc', 'u2', 'set_email', '{"email": "u2@example.com", "command_id": "e1"}') -> 'revision' AS revision;
-- the same id with another payload is another command: refused
SELECT dc.send_command('uc', 'u2', 'set_email', '{"email": "other@example.com", "command_id": "e1"}') -> 'state' ->> 'email' AS email;
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.send_command('uc', 'u2', 'set_email', '{"email": "u2@example.com", "command_id": "e1"}') -> 'state' ->> 'email' AS email;
SELECT count(*) AS audit_rows_u2 FROM profile_audit WHERE user_id = 'u2';

-- what a handler may not return
CREATE FUNCTION bad_state(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE payload ->> 'do'
           WHEN 'rename' THEN state || '{"user_id": "someone_else"}'
           WHEN 'drop_balance' THEN state - 'balance'
           WHEN 'negative' THEN state || '{"balance": -1}'
           WHEN 'fraction' THEN state || '{"balance": 1.005}'
           WHEN 'count' THEN state || '{"login_count": 1.5}'
           WHEN 'logged_in' THEN state || '{"logged_in": "yes"}'
           WHEN 'time' THEN state || '{"last_event_time": "soon"}'
           WHEN 'array' THEN '[1]'::jsonb
           WHEN 'null' THEN NULL
           WHEN 'huge' THEN state || jsonb_build_object('blob', repeat('x', 4000))
           WHEN 'send' THEN dc.send_command('uc', 'u9', 'login')
           ELSE state || jsonb_build_object('balance', 12.5, 'tier', 'gold') END
$$;
SELECT dc.register_command('bad_state', 'bad_state(jsonb, jsonb)');
SELECT d, try(format($$SELECT dc.send_command('uc', 'u3', 'bad_state', '{"do": "%s"}')$$, d))
  FROM unnest(ARRAY['rename', 'drop_balance', 'negative', 'fraction', 'count', 'logged_in',
                    'time', 'array', 'null', 'huge', 'send']) AS d;
SELECT dc.get_state('uc', 'u3') AS never_stored;
-- a handler may set built-in keys to values a command could leave
SELECT show(dc.send_command('uc', 'u3', 'bad_state', '{}'));

-- a handler cannot queue commands at commit, and the session-level
-- advisory locks it takes end with it (not with the node's store session)
CREATE FUNCTION sneaky(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE payload ->> 'do'
           WHEN 'at_commit' THEN state || jsonb_build_object(
               'queued', dc.send_command_at_commit('uc', 'u9', 'login'))
           ELSE state || jsonb_build_object('locked', pg_try_advisory_lock(4242)) END
$$;
SELECT dc.register_command('sneaky', 'sneaky(jsonb, jsonb)');
SELECT try($$SELECT dc.send_command('uc', 'u4', 'sneaky', '{"do": "at_commit"}')$$);
SELECT count(*) AS queued_by_handler FROM durable_cluster.pending_commands WHERE user_id = 'u9';
SELECT dc.send_command('uc', 'u4', 'sneaky', '{}') -> 'state' -> 'locked' AS handler_took_lock;
SELECT pg_try_advisory_lock(4242) AS free_after_the_handler;
SELECT pg_advisory_unlock(4242);
SELECT dc.unregister_command('sneaky');
DROP FUNCTION sneaky(jsonb, jsonb);

-- registering: only superusers and dc_admin members, checked handlers
SET ROLE uc_user;
SELECT try($$SELECT dc.register_command('x', 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.unregister_command('set_email')$$);
RESET ROLE;
SELECT try($$SELECT dc.register_command('login', 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.unregister_command('login')$$);
SELECT try($$SELECT dc.register_command('set_email', 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.register_command('Bad-Name', 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.register_command('', 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.register_command(NULL, 'set_email(jsonb, jsonb)')$$);
SELECT try($$SELECT dc.register_command('x', NULL)$$);
SELECT try($$SELECT dc.register_command('x', 'jsonb_typeof(jsonb)')$$);
SELECT try($$SELECT dc.register_command('x', 'jsonb_concat(jsonb, jsonb)')$$) AS builtin_function_ok;
SELECT dc.unregister_command('x');
CREATE FUNCTION private_handler(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS 'SELECT state';
REVOKE EXECUTE ON FUNCTION private_handler(jsonb, jsonb) FROM PUBLIC;
SET ROLE uc_admin;
SELECT try($$SELECT dc.register_command('priv', 'private_handler(jsonb, jsonb)')$$);
-- a handler runs as its owner: registering one owned by a role whose
-- privileges the registrant lacks would lend them to it
-- (jsonb_concat belongs to the bootstrap superuser, whatever its name)
SELECT replace(try($$SELECT dc.register_command('concat', 'jsonb_concat(jsonb, jsonb)')$$),
               (SELECT rolname FROM pg_roles WHERE oid = 10), 'SUPERUSER') AS try;
-- the registry is written only through the functions
SELECT try($$INSERT INTO durable_cluster.commands VALUES ('priv', 'private_handler(jsonb, jsonb)', current_user)$$);
RESET ROLE;

-- a payload travels in shared memory: at most 2048 bytes
SELECT try(format($$SELECT dc.send_command('uc', 'u1', 'set_email', '{"email": "a@b.c", "pad": "%s"}')$$,
                  repeat('p', 2100)));

-- a dropped handler fails its command until it is registered again
DROP FUNCTION bad_state(jsonb, jsonb);
SELECT try($$SELECT dc.send_command('uc', 'u3', 'bad_state', '{}')$$);
SELECT dc.unregister_command('bad_state');
SELECT try($$SELECT dc.send_command('uc', 'u3', 'bad_state', '{}')$$);
SELECT try($$SELECT dc.unregister_command('bad_state')$$);

SELECT dc.unregister_command('set_email');
DROP FUNCTION private_handler(jsonb, jsonb);
SET ROLE uc_admin;
DROP FUNCTION set_email(jsonb, jsonb);
RESET ROLE;
DROP TABLE profile_audit;
REVOKE CREATE ON SCHEMA public FROM uc_admin;
DROP ROLE uc_admin;
DROP ROLE uc_user;
