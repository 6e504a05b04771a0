--
-- Bad input raises an error with a specific SQLSTATE and a message naming
-- the problem, and changes no state.
--
CREATE TEMP TABLE stored_before AS
    SELECT count(*) AS entities, sum(revision) AS revisions FROM durable_cluster.entity_state;

-- entity ids
SELECT try($$SELECT dc.send_command(NULL, 'u', 'login')$$);
SELECT try($$SELECT dc.send_command('m', NULL, 'login')$$);
SELECT try($$SELECT dc.send_command('', 'u', 'login')$$);
SELECT try($$SELECT dc.send_command('m', '', 'login')$$);
SELECT try($$SELECT dc.send_command(repeat('m', 256), 'u', 'login')$$);
SELECT try($$SELECT dc.send_command('m', repeat('é', 128), 'login')$$);  -- 256 bytes
SELECT try($$SELECT dc.send_command(repeat('m', 255), repeat('u', 255), 'get_state')$$);  -- at the limit
SELECT try($$SELECT dc.get_state(NULL, 'u')$$);
SELECT try($$SELECT dc.get_state('m', '')$$);
SELECT try($$SELECT dc.shard_id('m', NULL)$$);

-- commands
SELECT try($$SELECT dc.send_command('m', 'u', NULL)$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'fly')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'LOGIN')$$);
\set VERBOSITY default
SELECT dc.send_command('m', 'u', 'fly');
\set VERBOSITY terse

-- payloads
SELECT try($$SELECT dc.send_command('m', 'u', 'login', NULL)$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'login', '[]')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'login', '"x"')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '5')$$);

-- amounts
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": null}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": true}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": [1]}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 0}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'deduct_balance', '{"amount": -5}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'refund_balance', '{"amount": "-0.01"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "abc"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": ""}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "NaN"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "Infinity"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "1e"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "12 34"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": "1e-3"}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 1.234}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 0.001}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 1000000000000.01}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 1e13}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'add_balance', '{"amount": 99999999999999999999999}')$$);

-- nicknames
SELECT try($$SELECT dc.send_command('m', 'u', 'update_profile')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'update_profile', '{"nickname": ""}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'update_profile', '{"nickname": null}')$$);
SELECT try($$SELECT dc.send_command('m', 'u', 'update_profile', '{"nickname": 7}')$$);
SELECT try(format($$SELECT dc.send_command('m', 'u', 'update_profile', '{"nickname": "%s"}')$$,
                  repeat('가', 65)));
-- 64 characters is the limit, whatever their byte length
SELECT try(format($$SELECT dc.send_command('m', 'limit', 'update_profile', '{"nickname": "%s"}')$$,
                  repeat('가', 64)));

-- wrong types are caught by PostgreSQL before we run
SELECT try($$SELECT dc.send_command('m', 'u', 'login', 'not json')$$);

-- nothing was stored by any of the rejected calls (only the valid 64-character nickname)
SELECT s.entities - b.entities AS new_entities, s.revisions - b.revisions AS new_revisions
  FROM stored_before b,
       (SELECT count(*) AS entities, sum(revision) AS revisions
          FROM durable_cluster.entity_state) s;
SELECT (dc.get_state('m', 'u') ->> 'revision') = '0' AS u_untouched;

-- a payload encoded twice (a JSON string holding an object) says so
\set VERBOSITY default
SELECT dc.send_command('m', 'u', 'login', to_jsonb('{"amount": 1}'::text));
\set VERBOSITY terse
