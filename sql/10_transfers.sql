--
-- dc.transfer: a saga of deduct, add and (if the add is rejected) refund,
-- each step with a command_id of the saga and its row in dc.sagas written
-- with the step.
--
SELECT dc.send_command('tr', 'alice', 'add_balance', '{"amount": 100}') -> 'state' -> 'balance' AS alice;

SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 30) - 'saga_id' AS transfer;
SELECT dc.get_state('tr', 'alice') -> 'state' -> 'balance' AS alice, dc.get_state('tr', 'bob') -> 'state' -> 'balance' AS bob;
SELECT from_user, to_user, amount, step, status FROM dc.sagas ORDER BY saga_id;

-- not enough money: nothing moved, no saga to finish
SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 70.01) - 'saga_id' AS transfer;
SELECT count(*) AS sagas FROM dc.sagas;

-- the add is rejected (the target's balance would pass the maximum): the
-- source gets its money back and the saga is compensated
CREATE FUNCTION max_out(state jsonb, payload jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || '{"balance": 9999999999999999.99}' $$;
SELECT dc.register_command('max_out', 'max_out(jsonb, jsonb)');
SELECT dc.send_command('tr', 'rich', 'max_out') -> 'state' -> 'balance' AS rich;
SELECT dc.transfer('tr', 'alice', 'tr', 'rich', 10) - 'saga_id' AS transfer;
SELECT dc.get_state('tr', 'alice') -> 'state' -> 'balance' AS alice, dc.get_state('tr', 'rich') -> 'state' -> 'balance' AS rich;
SELECT from_user, to_user, amount, step, status FROM dc.sagas ORDER BY saga_id;
SELECT dc.unregister_command('max_out');
DROP FUNCTION max_out(jsonb, jsonb);

-- each step was applied once, under the saga's command ids
SELECT regexp_replace(command_id, '[0-9]+', 'N') AS command_id, reply ->> 'result' AS result,
       reply ->> 'error' AS error
  FROM durable_cluster.command_log
 WHERE mall_id = 'tr' AND command_id LIKE 'saga-%' ORDER BY seq;

-- a saga whose caller failed after the deduct is finished by the saga
-- worker: here the deduct is done by hand and the row written as the
-- node would have, last changed long ago (TAP 010 makes a real one)
SELECT dc.send_command('tr', 'alice', 'deduct_balance', '{"amount": 5}') ->> 'result' AS deduct;
INSERT INTO durable_cluster.sagas (saga_id, from_mall, from_user, to_mall, to_user, amount,
                                   step, status, created_at, updated_at)
VALUES (1000000, 'tr', 'alice', 'tr', 'carol', 5, 'deducted', 'running',
        now() - interval '1 hour', now() - interval '1 hour');
CREATE OR REPLACE FUNCTION wait_for_saga(id bigint, want text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
    got text;
BEGIN
    LOOP
        SELECT status INTO got FROM dc.sagas WHERE saga_id = id;
        IF got = want OR clock_timestamp() > deadline THEN
            RETURN got;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT wait_for_saga(1000000, 'completed');
SELECT step FROM dc.sagas WHERE saga_id = 1000000;
SELECT dc.get_state('tr', 'alice') -> 'state' -> 'balance' AS alice, dc.get_state('tr', 'carol') -> 'state' -> 'balance' AS carol;

-- bad input changes nothing
\set VERBOSITY terse
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'alice', 1)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 0)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'bob', -5)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 1.001)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'bob', 1e13)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', 'tr', 'bob', NULL)$$);
SELECT try($$SELECT dc.transfer('tr', NULL, 'tr', 'bob', 1)$$);
SELECT try($$SELECT dc.transfer('tr', 'alice', '', 'bob', 1)$$);
-- the steps' command ids are the saga's alone: a client cannot answer one
-- in advance
SELECT try($$SELECT dc.send_command('tr', 'alice', 'get_state', '{"command_id": "saga-99-deduct"}')$$);
SELECT count(*) AS sagas FROM dc.sagas;
SELECT dc.get_state('tr', 'alice') -> 'state' -> 'balance' AS alice, dc.get_state('tr', 'bob') -> 'state' -> 'balance' AS bob;
DROP FUNCTION wait_for_saga(bigint, text);
