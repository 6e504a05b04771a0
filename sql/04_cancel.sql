--
-- A caller that stops waiting (statement_timeout, which cancels like
-- pg_cancel_backend, or ask_timeout) leaves the node and its inbox healthy.
-- The node is held up by a lock this session takes on the state table.
--
SELECT show(dc.send_command('mall001', 'waiter', 'login'));

BEGIN;
LOCK TABLE durable_cluster.entity_state IN ACCESS EXCLUSIVE MODE;
SET LOCAL statement_timeout = '300ms';
SELECT dc.send_command('mall001', 'waiter', 'login');
ROLLBACK;

BEGIN;
LOCK TABLE durable_cluster.entity_state IN ACCESS EXCLUSIVE MODE;
SET LOCAL durable_cluster.ask_timeout = '300ms';
SELECT dc.send_command('mall001', 'waiter', 'login');
ROLLBACK;

-- Both commands had reached the node, so both were applied once the lock
-- went away: a caller that gives up cannot know, which is why both errors
-- say so -- the statement_timeout too, as 40003 and not as a plain cancel
-- (57014), which would mean "not applied".  Later commands are served
-- normally.
SELECT dc.send_command('mall001', 'waiter', 'get_state') #> '{state,login_count}' AS login_count,
       dc.send_command('mall001', 'waiter', 'get_state') -> 'revision' AS revision;
SELECT count(*) AS replies, count(*) FILTER (WHERE (r ->> 'ok')::boolean) AS ok
  FROM generate_series(1, 50) g, LATERAL dc.send_command('mall001', 'waiter', 'logout') r;
