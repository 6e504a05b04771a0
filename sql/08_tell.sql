--
-- dc.tell: fire and forget.  It returns once the owner node has the
-- command, before it is applied and committed; the state shows it soon
-- after.
--
CREATE FUNCTION wait_for_state(m text, u text, cond text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '30 seconds';
    ok boolean;
BEGIN
    LOOP
        EXECUTE format('SELECT coalesce((%s), false) FROM (SELECT r -> ''state'' || jsonb_build_object(''revision'', r -> ''revision'') AS s FROM dc.get_state(%L, %L) r) x',
                       cond, m, u) INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out waiting for % of (%, %)', cond, m, u;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;

SELECT dc.tell('tell', 'u1', 'login');
SELECT wait_for_state('tell', 'u1', $$(s ->> 'logged_in')::boolean AND (s -> 'revision')::int = 1$$);

-- it does not wait for the commit: with the table locked here, the node
-- cannot store the command, and dc.tell returns all the same
BEGIN;
LOCK TABLE durable_cluster.entity_state IN SHARE MODE;
SELECT dc.tell('tell', 'u4', 'login');
SELECT (dc.get_state('tell', 'u4') ->> 'revision') = '0' AS not_stored_yet;
COMMIT;
SELECT wait_for_state('tell', 'u4', $$(s ->> 'logged_in')::boolean$$);

-- a tell with a command_id, retried with dc.send_command: applied once,
-- and the retry returns the tell's reply
SELECT dc.tell('tell', 'u1', 'add_balance', '{"amount": 3, "command_id": "t1"}');
SELECT wait_for_state('tell', 'u1', $$(s ->> 'balance')::numeric = 3$$);
SELECT r ->> 'result' AS result, r -> 'revision' AS revision, r -> 'state' -> 'balance' AS balance
  FROM dc.send_command('tell', 'u1', 'add_balance', '{"amount": 3, "command_id": "t1"}') r;
SELECT dc.get_state('tell', 'u1') -> 'state' -> 'balance' AS balance;

-- many tells from one session, each applied once, in order
SELECT count(*) FROM (SELECT dc.tell('tell', 'u2', 'add_balance', '{"amount": 1}')
                        FROM generate_series(1, 50)) t;
SELECT wait_for_state('tell', 'u2', $$(s -> 'revision')::int = 50$$);
SELECT dc.get_state('tell', 'u2') -> 'state' -> 'balance' AS balance;

-- the same bad input as dc.send_command, raised at once; nothing applied
SELECT dc.tell('tell', NULL, 'login');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.tell('tell', 'u3', 'fly');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.tell('tell', 'u3', 'add_balance', '{"amount": -1}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT (dc.get_state('tell', 'u3') ->> 'revision') = '0' AS never_stored;

DROP FUNCTION wait_for_state(text, text, text);
