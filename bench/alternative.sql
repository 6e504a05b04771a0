-- bench/alternative.sql
--     What an application would write instead of durable_cluster: a plain
--     table of entity states and a PL/pgSQL function with the semantics of
--     the add_balance command -- read the state under a row lock, validate
--     it, write it with revision + 1, return the new state -- inserting an
--     entity that is not there yet.  bench/throughput.sh measures the
--     extension against it, in the same run, on the same server.

CREATE TABLE bench_state (
    mall_id    text NOT NULL,
    user_id    text NOT NULL,
    state      jsonb NOT NULL,
    revision   bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (mall_id, user_id)
);

CREATE FUNCTION bench_add_balance(m text, u text, amount numeric) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    s jsonb;
    r bigint;
    balance numeric;
BEGIN
    IF amount IS NULL OR amount <= 0 OR amount > 1000000000000 OR scale(amount) > 2 THEN
        RAISE EXCEPTION 'bad amount %', amount USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT state, revision INTO s, r
      FROM bench_state WHERE mall_id = m AND user_id = u
       FOR UPDATE;
    IF NOT FOUND THEN
        s := jsonb_build_object('mall_id', m, 'user_id', u, 'logged_in', false,
                                'login_count', 0, 'nickname', NULL, 'balance', '0.00',
                                'last_event_time', NULL);
        r := 0;
        INSERT INTO bench_state VALUES (m, u, s, 0, now())
            ON CONFLICT DO NOTHING;
        SELECT state, revision INTO s, r
          FROM bench_state WHERE mall_id = m AND user_id = u
           FOR UPDATE;
    END IF;
    balance := (s ->> 'balance')::numeric + amount;
    IF balance > 9999999999999999.99 THEN
        RETURN jsonb_build_object('ok', false, 'error', 'balance_out_of_range',
                                  'state', s, 'revision', r);
    END IF;
    s := s || jsonb_build_object('balance', to_char(balance, 'FM9999999999999990.00'),
                                 'last_event_time', now());
    UPDATE bench_state SET state = s, revision = r + 1, updated_at = now()
     WHERE mall_id = m AND user_id = u;
    RETURN jsonb_build_object('ok', true, 'result', 'balance_added', 'state', s,
                              'revision', r + 1);
END
$$;
