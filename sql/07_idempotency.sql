--
-- Idempotent retries: a command sent with a "command_id" is applied once;
-- a retry with the same command_id for the same entity gets the original
-- reply and changes nothing.
--
CREATE TEMP TABLE first_reply AS
SELECT dc.send_command('idem', 'u1', 'add_balance', '{"amount": 5, "command_id": "c1"}') AS r;
SELECT r ->> 'result' AS result, r -> 'revision' AS revision, r -> 'state' -> 'balance' AS balance
  FROM first_reply;

-- the retry: the same reply, applied once
SELECT dc.send_command('idem', 'u1', 'add_balance', '{"amount": 5, "command_id": "c1"}')
       = (SELECT r FROM first_reply) AS same_reply;
SELECT dc.get_state('idem', 'u1') -> 'state' -> 'balance' AS balance, dc.get_state('idem', 'u1') -> 'revision' AS revision;

-- other command ids are other commands; a retry much later still gets the
-- original reply
SELECT dc.send_command('idem', 'u1', 'add_balance', '{"amount": 7, "command_id": "c2"}') -> 'revision' AS revision;
SELECT dc.send_command('idem', 'u1', 'add_balance', '{"amount": 5.00, "command_id": "c1"}')
       = (SELECT r FROM first_reply) AS same_reply;

-- but an id is bound to its command: another command, or the same with
-- other arguments, is refused and applies nothing
SELECT dc.send_command('idem', 'u1', 'add_balance', '{"amount": 100, "command_id": "c1"}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.send_command('idem', 'u1', 'deduct_balance', '{"amount": 5, "command_id": "c1"}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.get_state('idem', 'u1') -> 'state' -> 'balance' AS balance, dc.get_state('idem', 'u1') -> 'revision' AS revision;

-- command_id squatting: a get_state that takes an id first does not turn
-- the real command sent later with that id into a no-op that looks applied
SELECT dc.send_command('idem', 'u4', 'get_state', '{"command_id": "order-44"}') ->> 'result' AS result;
SELECT dc.send_command('idem', 'u4', 'add_balance', '{"amount": 500, "command_id": "order-44"}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.get_state('idem', 'u4') AS never_stored;

-- command ids belong to an entity: the same id on another entity is new
SELECT dc.send_command('idem', 'u2', 'add_balance', '{"amount": 5, "command_id": "c1"}') ->> 'result' AS result;
SELECT dc.get_state('idem', 'u2') -> 'state' -> 'balance' AS balance;

-- a rejection is a reply too: the retry is rejected again, though the
-- balance would now cover it
SELECT dc.send_command('idem', 'u2', 'deduct_balance', '{"amount": 50, "command_id": "d1"}') ->> 'error' AS error;
SELECT dc.send_command('idem', 'u2', 'add_balance', '{"amount": 100}') -> 'state' -> 'balance' AS balance;
SELECT dc.send_command('idem', 'u2', 'deduct_balance', '{"amount": 50, "command_id": "d1"}') ->> 'error' AS error;
SELECT dc.get_state('idem', 'u2') -> 'state' -> 'balance' AS balance;

-- the log holds each command once
SELECT user_id, command_id, reply -> 'revision' AS revision
  FROM durable_cluster.command_log WHERE mall_id = 'idem' ORDER BY seq;

-- bad command ids are errors, and nothing is applied
SELECT dc.send_command('idem', 'u3', 'login', '{"command_id": 42}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.send_command('idem', 'u3', 'login', '{"command_id": ""}');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT dc.send_command('idem', 'u3', 'login', jsonb_build_object('command_id', repeat('x', 256)));
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT (dc.get_state('idem', 'u3') ->> 'revision') = '0' AS never_stored;

-- the cap: an entity keeps its newest command_log_per_entity (100 by
-- default) entries, after every batch; a retry of an older one is applied
-- as a new command (docs/sql-api.md, "Retries")
SELECT count(*) FILTER (WHERE (r ->> 'ok')::boolean) AS applied
  FROM (SELECT dc.send_command('idem', 'w', 'add_balance',
                               jsonb_build_object('amount', 1, 'command_id', 'w' || g)) AS r
          FROM generate_series(1, 150) g) s;
SELECT count(*) AS kept, min(seq) = max(seq) - 99 AS newest
  FROM durable_cluster.command_log WHERE mall_id = 'idem' AND user_id = 'w';
-- w51 is the 100th newest: still answered from the log
SELECT dc.send_command('idem', 'w', 'add_balance', '{"amount": 1, "command_id": "w51"}') -> 'revision' AS revision;
SELECT dc.get_state('idem', 'w') -> 'revision' AS revision;
-- w50 is past the cap: applied again
SELECT dc.send_command('idem', 'w', 'add_balance', '{"amount": 1, "command_id": "w50"}') -> 'revision' AS revision;
