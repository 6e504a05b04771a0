// examples/java/Tutorial.java
//     The tutorial from JDBC (PgJDBC, Debian's libpostgresql-jdbc-java),
//     run as a single source file:
//         java -cp /usr/share/java/postgresql.jar Tutorial.java
//     The payload goes as a string with a ?::jsonb cast (setString alone
//     sends varchar, for which there is no dc.send_command: 42883); fields
//     are taken out of the reply in SQL, money as BigDecimal from its
//     string.  Asserts what it prints; exits non-zero on the first
//     surprise.  Connection from PGHOST, PGPORT, PGDATABASE, EXAMPLE_USER,
//     EXAMPLE_PASSWORD (see examples/run.sh).

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;

public class Tutorial {
    static final String MALL = "ex_java_" + System.currentTimeMillis();
    static Connection conn;

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    static void check(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError("not as expected: " + what);
        }
    }

    static void ok(String what) {
        System.out.println("ok - " + what);
    }

    /** A command's reply, the fields the tutorial looks at. */
    record Reply(boolean ok, String result, String error, long revision, BigDecimal balance,
                 String nickname) {}

    static Reply send(String user, String command, String payloadJson) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT (r->>'ok')::boolean, r->>'result', r->>'error', (r->>'revision')::bigint,"
                + " r#>>'{state,balance}', r#>>'{state,nickname}'"
                + "  FROM dc.send_command(?, ?, ?, ?::jsonb) r")) {
            ps.setString(1, MALL);
            ps.setString(2, user);
            ps.setString(3, command);
            ps.setString(4, payloadJson);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return new Reply(rs.getBoolean(1), rs.getString(2), rs.getString(3), rs.getLong(4),
                                 new BigDecimal(rs.getString(5)), rs.getString(6));
            }
        }
    }

    static String scalar(String sql, String... args) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setString(i + 1, args[i]);
            }
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getString(1);
            }
        }
    }

    static String sqlStateOf(String user, String command, String payloadJson) {
        try {
            send(user, command, payloadJson);
        } catch (SQLException e) {
            return e.getSQLState();
        }
        throw new AssertionError("expected an error for " + command + " " + payloadJson);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + env("PGHOST", "localhost") + ":" + env("PGPORT", "5432")
            + "/" + env("PGDATABASE", "postgres");
        conn = DriverManager.getConnection(url, env("EXAMPLE_USER", "example_app"),
                                           env("EXAMPLE_PASSWORD", ""));

        Reply r = send("alice", "login", "{}");
        check(r.ok() && r.result().equals("logged_in") && r.revision() == 1, "login");
        ok("login: revision " + r.revision());

        r = send("alice", "update_profile", "{\"nickname\": \"Alice\"}");
        check("Alice".equals(r.nickname()), "profile");
        ok("profile: " + r.nickname());

        for (int i = 0; i < 100; i++) {
            r = send("alice", "add_balance", "{\"amount\": \"999999999999.99\"}");
        }
        r = send("alice", "add_balance", "{\"amount\": \"0.99\"}");
        check(r.balance().equals(new BigDecimal("99999999999999.99")), "large balance " + r.balance());
        ok("large balance, exact: " + r.balance().toPlainString());

        r = send("bob", "deduct_balance", "{\"amount\": \"5.00\"}");
        check(!r.ok() && "insufficient_balance".equals(r.error())
              && r.balance().compareTo(BigDecimal.ZERO) == 0, "rejected deduct");
        ok("rejected deduct: " + r.error());

        String saga = scalar("SELECT dc.transfer(?, ?, ?, ?, ?::numeric) ->> 'status'",
                             MALL, "alice", MALL, "bob", "25.50");
        check("completed".equals(saga), "transfer " + saga);
        r = send("bob", "get_state", "{}");
        check(r.balance().equals(new BigDecimal("25.50")), "bob after the transfer " + r.balance());
        ok("transfer: " + saga + ", bob has " + r.balance());

        // A command inside the caller's transaction: gone with a rollback ...
        conn.setAutoCommit(false);
        scalar("SELECT dc.send_command_at_commit(?, ?, 'add_balance', ?::jsonb)", MALL, "bob",
               "{\"amount\": \"10.00\", \"command_id\": \"tx-rolled-back\"}");
        conn.rollback();
        conn.setAutoCommit(true);
        // (asked with the command it was sent as: an outcome is bound to its command)
        check(scalar("SELECT dc.command_outcome(?, ?, ?, 'add_balance', ?::jsonb)", MALL, "bob",
                     "tx-rolled-back", "{\"amount\": \"10.00\"}") == null,
              "rolled back");
        ok("rolled back: never applied");
        // ... applied once after a commit
        conn.setAutoCommit(false);
        scalar("SELECT dc.send_command_at_commit(?, ?, 'add_balance', ?::jsonb)", MALL, "bob",
               "{\"amount\": \"10.00\", \"command_id\": \"tx-committed\"}");
        conn.commit();
        conn.setAutoCommit(true);
        String status = "pending";
        for (long deadline = System.currentTimeMillis() + 30000;
             "pending".equals(status) && System.currentTimeMillis() < deadline; Thread.sleep(50)) {
            status = scalar("SELECT dc.command_outcome(?, ?, ?, 'add_balance', ?::jsonb) ->> 'status'",
                            MALL, "bob", "tx-committed", "{\"amount\": \"10.00\"}");
        }
        String balance = scalar("SELECT dc.command_outcome(?, ?, ?, 'add_balance', ?::jsonb)"
                                + " #>> '{reply,state,balance}'",
                                MALL, "bob", "tx-committed", "{\"amount\": \"10.00\"}");
        check("done".equals(status) && new BigDecimal(balance).equals(new BigDecimal("35.50")),
              "committed " + status + " " + balance);
        ok("committed: applied after the commit: " + balance);

        // Errors by SQLSTATE
        String state = sqlStateOf("bob", "add_balance", "{\"amount\": " + (0.1 + 0.2) + "}");
        check("22023".equals(state), "float amount " + state);
        ok("float amount refused: " + state);
        state = sqlStateOf("bob", "fly", "{}");
        check("22023".equals(state), "unknown command " + state);
        ok("unknown command: " + state);
        // without the cast, the payload is varchar: no such function
        try (PreparedStatement ps = conn.prepareStatement("SELECT dc.send_command(?, ?, ?, ?)")) {
            ps.setString(1, MALL);
            ps.setString(2, "bob");
            ps.setString(3, "login");
            ps.setString(4, "{}");
            ps.executeQuery();
            throw new AssertionError("a varchar payload was accepted");
        } catch (SQLException e) {
            check("42883".equals(e.getSQLState()), "uncast payload " + e.getSQLState());
            ok("payload without ::jsonb: " + e.getSQLState());
        }

        Reply first = send("bob", "add_balance", "{\"amount\": \"1.00\", \"command_id\": \"order-1\"}");
        Reply again = send("bob", "add_balance", "{\"amount\": \"1.00\", \"command_id\": \"order-1\"}");
        check(first.revision() == again.revision()
              && again.balance().equals(new BigDecimal("36.50")), "retry");
        ok("retry with command_id: revision " + again.revision() + " both times, balance "
           + again.balance());

        String got = scalar("SELECT dc.get_state(?, ?) #>> '{state,balance}'", MALL, "bob");
        check(new BigDecimal(got).equals(new BigDecimal("36.50")), "dc.get_state " + got);
        ok("dc.get_state: " + got);

        conn.close();
        System.out.println("java tutorial: all steps passed");
    }
}
