#!/usr/bin/python3
#
# examples/python/tutorial.py
#     The tutorial from Python with psycopg2 (Debian's python3-psycopg2),
#     with the driver's defaults: jsonb comes back as dicts (json.loads),
#     a payload goes as psycopg2.extras.Json.  Money is read with
#     decimal.Decimal from its string.  Asserts what it prints; exits
#     non-zero on the first surprise.  Connection from PGHOST, PGPORT,
#     PGDATABASE, EXAMPLE_USER, EXAMPLE_PASSWORD (see examples/run.sh).
#

import os
import sys
import time
from decimal import Decimal

import psycopg2
from psycopg2.extras import Json

MALL = "ex_python_%d" % int(time.time() * 1000)

conn = psycopg2.connect(host=os.environ.get("PGHOST", "localhost"),
                        port=int(os.environ.get("PGPORT", "5432")),
                        dbname=os.environ.get("PGDATABASE", "postgres"),
                        user=os.environ.get("EXAMPLE_USER", "example_app"),
                        password=os.environ.get("EXAMPLE_PASSWORD", ""))
conn.autocommit = True


def ok(what):
    print("ok - " + what)


def send(user, command, payload=None):
    with conn.cursor() as cur:
        cur.execute("SELECT dc.send_command(%s, %s, %s, %s)",
                    (MALL, user, command, Json(payload or {})))
        return cur.fetchone()[0]


def scalar(sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def sqlstate_of(fn):
    try:
        fn()
    except psycopg2.Error as e:
        return e.pgcode, e.diag.message_hint
    raise AssertionError("expected an error")


r = send("alice", "login")
assert r["ok"] and r["result"] == "logged_in" and r["revision"] == 1, r
ok("login: revision %d on %s" % (r["revision"], r["node"]))

r = send("alice", "update_profile", {"nickname": "Alice"})
assert r["state"]["nickname"] == "Alice", r
ok("profile: " + r["state"]["nickname"])

for _ in range(100):
    r = send("alice", "add_balance", {"amount": "999999999999.99"})
r = send("alice", "add_balance", {"amount": "0.99"})
assert isinstance(r["state"]["balance"], str), r
assert Decimal(r["state"]["balance"]) == Decimal("99999999999999.99"), r
ok("large balance, exact: " + r["state"]["balance"])

r = send("bob", "deduct_balance", {"amount": "5.00"})
assert not r["ok"] and r["error"] == "insufficient_balance", r
assert Decimal(r["state"]["balance"]) == 0, r
ok("rejected deduct: " + r["error"])

saga = scalar("SELECT dc.transfer(%s, %s, %s, %s, %s)", MALL, "alice", MALL, "bob",
              Decimal("25.50"))
assert saga["status"] == "completed" and saga["amount"] == "25.50", saga
r = send("bob", "get_state")
assert Decimal(r["state"]["balance"]) == Decimal("25.50"), r
ok("transfer: %s, bob has %s" % (saga["status"], r["state"]["balance"]))

# A command inside the caller's transaction: gone with a rollback ...
conn.autocommit = False
scalar("SELECT dc.send_command_at_commit(%s, %s, 'add_balance', %s)", MALL, "bob",
       Json({"amount": "10.00", "command_id": "tx-rolled-back"}))
conn.rollback()
conn.autocommit = True
# (asked with the command it was sent as: an outcome is bound to its command)
assert scalar("SELECT dc.command_outcome(%s, %s, %s, 'add_balance', %s)", MALL, "bob",
              "tx-rolled-back", Json({"amount": "10.00"})) is None
ok("rolled back: never applied")
# ... applied once after a commit ("with conn" commits at the end of the block)
conn.autocommit = False
with conn:
    scalar("SELECT dc.send_command_at_commit(%s, %s, 'add_balance', %s)", MALL, "bob",
           Json({"amount": "10.00", "command_id": "tx-committed"}))
conn.autocommit = True
deadline = time.time() + 30
outcome = None
while time.time() < deadline:
    outcome = scalar("SELECT dc.command_outcome(%s, %s, %s, 'add_balance', %s)", MALL, "bob",
                     "tx-committed", Json({"amount": "10.00"}))
    if outcome["status"] != "pending":
        break
    time.sleep(0.05)
assert outcome["status"] == "done", outcome
assert Decimal(outcome["reply"]["state"]["balance"]) == Decimal("35.50"), outcome
ok("committed: applied after the commit: " + outcome["reply"]["state"]["balance"])

# Errors by SQLSTATE.  A float is not an amount; send a string or a Decimal's str().
code, hint = sqlstate_of(lambda: send("bob", "add_balance", {"amount": 0.1 + 0.2}))
assert code == "22023" and "two decimals" in hint, (code, hint)
ok("float amount refused: %s" % code)
code, _ = sqlstate_of(lambda: send("bob", "fly"))
assert code == "22023", code
ok("unknown command: " + code)

first = send("bob", "add_balance", {"amount": "1.00", "command_id": "order-1"})
again = send("bob", "add_balance", {"amount": "1.00", "command_id": "order-1"})
assert first["revision"] == again["revision"], (first, again)
assert Decimal(again["state"]["balance"]) == Decimal("36.50"), again
ok("retry with command_id: revision %d both times, balance %s"
   % (again["revision"], again["state"]["balance"]))

got = scalar("SELECT dc.get_state(%s, %s)", MALL, "bob")
assert got["revision"] == again["revision"] and got["state"]["balance"] == "36.50", got
ok("dc.get_state: revision %d" % got["revision"])

conn.close()
print("python tutorial: all steps passed")
sys.exit(0)
