--
-- Every command, the shape of its reply, revisions and the stored state.
--

-- A new entity: get_state answers the initial state and stores nothing.
SELECT show(dc.send_command('mall001', 'user001', 'get_state'));
SELECT (dc.get_state('mall001', 'user001') ->> 'revision') = '0' AS not_stored;

SELECT show(dc.send_command('mall001', 'user001', 'login'));
SELECT show(dc.send_command('mall001', 'user001', 'login'));
SELECT show(dc.send_command('mall001', 'user001', 'logout'));
SELECT show(dc.send_command('mall001', 'user001', 'update_profile', '{"nickname": "홍길동"}'));
SELECT show(dc.send_command('mall001', 'user001', 'add_balance', '{"amount": 100.50}'));
SELECT show(dc.send_command('mall001', 'user001', 'add_balance', '{"amount": "0.05"}'));
SELECT show(dc.send_command('mall001', 'user001', 'deduct_balance', '{"amount": 30}'));
-- a domain rejection is a reply, not an error; nothing changes
SELECT show(dc.send_command('mall001', 'user001', 'deduct_balance', '{"amount": 1000}'));
SELECT show(dc.send_command('mall001', 'user001', 'refund_balance', '{"amount": 1e1}'));
-- the default payload is '{}'; extra keys are ignored
SELECT show(dc.send_command('mall001', 'user001', 'get_state'));
SELECT show(dc.send_command('mall001', 'user001', 'login', '{"note": "ignored"}'));

-- dc.get_state answers what the command get_state answers: one document.
SELECT dc.get_state('mall001', 'user001')
       = dc.send_command('mall001', 'user001', 'get_state') AS same_document,
       dc.get_state('mall001', 'user001') -> 'revision' AS revision;
SELECT revision, shard_id, state - 'last_event_time' AS state
  FROM durable_cluster.entity_state WHERE mall_id = 'mall001' AND user_id = 'user001';

-- Exactly the documented keys; exact types; ISO 8601 time with zone.
SELECT array_agg(k ORDER BY k) AS keys
  FROM jsonb_object_keys(dc.send_command('mall001', 'user001', 'get_state') -> 'state') k;
SELECT jsonb_typeof(s -> 'logged_in') AS logged_in, jsonb_typeof(s -> 'login_count') AS login_count,
       jsonb_typeof(s -> 'nickname') AS nickname, jsonb_typeof(s -> 'balance') AS balance,
       s ->> 'last_event_time' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$' AS iso_8601,
       (s ->> 'last_event_time')::timestamptz BETWEEN now() - interval '1 minute' AND clock_timestamp()
           AS recent
  FROM (SELECT dc.get_state('mall001', 'user001') -> 'state' AS s) g;

-- Each persisted change raises the revision by one and moves last_event_time.
CREATE TEMP TABLE prior_state AS SELECT dc.get_state('mall001', 'user001') AS s;
SELECT (r ->> 'revision')::int - (b.s ->> 'revision')::int AS revision_step,
       (r #>> '{state,last_event_time}')::timestamptz > (b.s #>> '{state,last_event_time}')::timestamptz
           AS time_moved
  FROM prior_state b, dc.send_command('mall001', 'user001', 'logout') r;

-- Money is exact: 0.1 + 0.2 is 0.30; trailing zeros past 2 decimals are fine.
SELECT dc.send_command('mall001', 'money', 'add_balance', '{"amount": 0.1}') #> '{state,balance}';
SELECT dc.send_command('mall001', 'money', 'add_balance', '{"amount": 0.2}') #> '{state,balance}';
SELECT dc.send_command('mall001', 'money', 'add_balance', '{"amount": "1.230"}') #> '{state,balance}';
SELECT dc.send_command('mall001', 'money', 'add_balance', '{"amount": "1.5e2"}') #> '{state,balance}';
SELECT dc.send_command('mall001', 'money', 'add_balance', '{"amount": 1000000000000}') #> '{state,balance}';
SELECT dc.send_command('mall001', 'money', 'deduct_balance', '{"amount": 1000000000000}') #> '{state,balance}';

-- Each reply comes from the node that owns the entity's shard.
SELECT count(*) AS replies,
       count(*) FILTER (WHERE (r ->> 'shard')::int = dc.shard_id('mall002', u)) AS right_shard,
       count(*) FILTER (WHERE r ->> 'node' = (SELECT node FROM dc.shards
                                              WHERE shard_id = (r ->> 'shard')::int)) AS right_node,
       count(DISTINCT r ->> 'node') AS nodes_used
  FROM generate_series(1, 30) g, LATERAL (SELECT 'user' || g AS u) u,
       LATERAL dc.send_command('mall002', u.u, 'login') r;

-- Commands on one entity apply one at a time, in order: revisions 1..20.
SELECT array_agg((dc.send_command('mall003', 'seq', 'add_balance', '{"amount": 1}') ->> 'revision')::int
                 ORDER BY g) = array_agg(g ORDER BY g) AS in_order
  FROM generate_series(1, 20) g;

-- A command runs in the node's transaction: rolling back the caller's
-- transaction does not undo it.
BEGIN;
SELECT dc.send_command('mall001', 'rollback', 'login') -> 'revision' AS revision;
ROLLBACK;
SELECT dc.get_state('mall001', 'rollback') -> 'revision' AS still_stored;

-- Once data is stored the number of shards is fixed.
SELECT try($$SELECT dc.set_number_of_shards(50)$$);
SELECT number_of_shards FROM durable_cluster.settings;

-- Money is a string with two decimals everywhere, exact up to the maximum
-- balance; amounts come as a JSON number or a string.
SELECT dc.send_command('money', 'm1', 'add_balance', '{"amount": "999999999999.99"}') #> '{state,balance}' AS balance;
SELECT dc.send_command('money', 'm1', 'add_balance', '{"amount": 100.5}') #> '{state,balance}' AS balance;
SELECT jsonb_typeof(dc.get_state('money', 'm1') #> '{state,balance}') AS balance_type;
-- a float computed in JavaScript: rejected, and the hint says what to send
\set VERBOSITY default
SELECT dc.send_command('money', 'm1', 'add_balance', '{"amount": 0.30000000000000004}');
\set VERBOSITY terse
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;

-- dc.get_state sees a command acknowledged earlier in the same statement,
-- and in a REPEATABLE READ transaction whose snapshot is older.
SELECT (dc.send_command('fresh', 'f1', 'add_balance', '{"amount": 1}') ->> 'revision')::int AS sent,
       (dc.get_state('fresh', 'f1') ->> 'revision')::int AS read;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dc.get_state('fresh', 'f1') ->> 'revision' AS before;
SELECT dc.send_command('fresh', 'f1', 'add_balance', '{"amount": 1}') ->> 'revision' AS sent;
SELECT dc.get_state('fresh', 'f1') ->> 'revision' AS after;
COMMIT;
