// examples/node/tutorial.js
//     The tutorial from node-postgres ("pg"), with the driver's defaults:
//     jsonb comes back parsed by JSON.parse, a JS object parameter goes as
//     JSON text.  Asserts what it prints; exits non-zero on the first
//     surprise.  Connection from PGHOST, PGPORT, PGDATABASE, EXAMPLE_USER,
//     EXAMPLE_PASSWORD (see examples/run.sh).
'use strict';

const assert = require('node:assert/strict');
const { Client } = require('pg');

const mall = `ex_node_${Date.now()}`;
const client = new Client({
  host: process.env.PGHOST || 'localhost',
  port: Number(process.env.PGPORT || 5432),
  database: process.env.PGDATABASE || 'postgres',
  user: process.env.EXAMPLE_USER || 'example_app',
  password: process.env.EXAMPLE_PASSWORD,
});

function ok(what, value) {
  console.log(`ok - ${what}${value === undefined ? '' : `: ${value}`}`);
}

// A command; the payload is a plain object (node-postgres sends it as JSON
// text, and the server reads it as jsonb).
async function send(user, command, payload = {}) {
  const { rows } = await client.query(
    'SELECT dc.send_command($1, $2, $3, $4) AS reply', [mall, user, command, payload]);
  return rows[0].reply;
}

// The SQLSTATE of what fn throws.
async function sqlstateOf(fn) {
  try {
    await fn();
  } catch (err) {
    return { code: err.code, hint: err.hint };
  }
  throw new Error('expected an error');
}

async function main() {
  await client.connect();

  let r = await send('alice', 'login');
  assert.equal(r.ok, true);
  assert.equal(r.result, 'logged_in');
  assert.equal(r.revision, 1);
  ok('login', `revision ${r.revision} on ${r.node}`);

  r = await send('alice', 'update_profile', { nickname: 'Alice' });
  assert.equal(r.state.nickname, 'Alice');
  ok('profile', r.state.nickname);

  // Money is a string with two decimals: exact, whatever JSON.parse does to
  // numbers.  100 deposits of the largest amount and 0.99 more make a
  // balance of 16 digits, which a JavaScript number cannot hold.
  for (let i = 0; i < 100; i++) {
    r = await send('alice', 'add_balance', { amount: '999999999999.99' });
  }
  r = await send('alice', 'add_balance', { amount: '0.99' });
  assert.equal(typeof r.state.balance, 'string');
  assert.equal(r.state.balance, '99999999999999.99');
  assert.notEqual(String(Number(r.state.balance)), r.state.balance);
  ok('large balance, exact', `${r.state.balance} (as a JS number it would be ${Number(r.state.balance)})`);

  r = await send('bob', 'deduct_balance', { amount: '5.00' });
  assert.equal(r.ok, false);
  assert.equal(r.error, 'insufficient_balance');
  assert.equal(r.state.balance, '0.00');
  ok('rejected deduct', r.error);

  const { rows: [t] } = await client.query(
    'SELECT dc.transfer($1, $2, $1, $3, $4) AS saga', [mall, 'alice', 'bob', '25.50']);
  assert.equal(t.saga.status, 'completed');
  assert.equal(t.saga.amount, '25.50');
  r = await send('bob', 'get_state');
  assert.equal(r.state.balance, '25.50');
  ok('transfer', `${t.saga.status}, bob has ${r.state.balance}`);

  // A command inside the caller's transaction: gone with a rollback ...
  await client.query('BEGIN');
  await client.query('SELECT dc.send_command_at_commit($1, $2, $3, $4)',
    [mall, 'bob', 'add_balance', { amount: '10.00', command_id: 'tx-rolled-back' }]);
  await client.query('ROLLBACK');
  // (asked with the command it was sent as: an outcome is bound to its command)
  let { rows: [o] } = await client.query('SELECT dc.command_outcome($1, $2, $3, $4, $5) AS o',
    [mall, 'bob', 'tx-rolled-back', 'add_balance', { amount: '10.00' }]);
  assert.equal(o.o, null);
  ok('rolled back: never applied');
  // ... applied once after a commit
  await client.query('BEGIN');
  await client.query('SELECT dc.send_command_at_commit($1, $2, $3, $4)',
    [mall, 'bob', 'add_balance', { amount: '10.00', command_id: 'tx-committed' }]);
  await client.query('COMMIT');
  const deadline = Date.now() + 30000;
  do {
    ({ rows: [o] } = await client.query('SELECT dc.command_outcome($1, $2, $3, $4, $5) AS o',
      [mall, 'bob', 'tx-committed', 'add_balance', { amount: '10.00' }]));
    if (o.o.status !== 'pending') break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  } while (Date.now() < deadline);
  assert.equal(o.o.status, 'done');
  assert.equal(o.o.reply.state.balance, '35.50');
  ok('committed: applied after the commit', o.o.reply.state.balance);

  // Errors by SQLSTATE.  A float computed in JavaScript is not an amount.
  let e = await sqlstateOf(() => send('bob', 'add_balance', { amount: 0.1 + 0.2 }));
  assert.equal(e.code, '22023');
  assert.match(e.hint, /toFixed\(2\)/);
  ok('float amount refused', `${e.code}; hint: ${e.hint}`);
  e = await sqlstateOf(() => send('bob', 'fly'));
  assert.equal(e.code, '22023');
  ok('unknown command', e.code);
  // A JS array is not a JSON payload for node-postgres: it becomes a
  // PostgreSQL array literal.  Pass JSON.stringify(array) if you mean JSON.
  e = await sqlstateOf(() => send('bob', 'login', [1, 2]));
  assert.equal(e.code, '22P02');
  ok('array payload', e.code);

  // A retry with the same command_id is answered, not applied again.
  const first = await send('bob', 'add_balance', { amount: '1.00', command_id: 'order-1' });
  const again = await send('bob', 'add_balance', { amount: '1.00', command_id: 'order-1' });
  assert.equal(again.revision, first.revision);
  assert.equal(again.state.balance, '36.50');
  ok('retry with command_id', `revision ${again.revision} both times, balance ${again.state.balance}`);

  // dc.get_state: the same document as get_state
  const { rows: [g] } = await client.query('SELECT dc.get_state($1, $2) AS s', [mall, 'bob']);
  assert.equal(g.s.revision, again.revision);
  assert.equal(g.s.state.balance, '36.50');
  ok('dc.get_state', `revision ${g.s.revision}`);

  await client.end();
  console.log('node tutorial: all steps passed');
}

main().catch((err) => {
  console.error('node tutorial FAILED:', err);
  process.exit(1);
});
