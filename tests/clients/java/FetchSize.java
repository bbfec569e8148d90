// Eddy with pgjdbc: setFetchSize streaming (Execute with a row limit inside a
// transaction) over 20,000 rows, and PreparedStatements with parameters.
//
// Usage: java -cp /usr/share/java/postgresql.jar tests/clients/java/FetchSize.java PORT
// Prints one line per check group, then 'FetchSize: N passed, M failed';
// exits 1 if any group failed.
import java.sql.*;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

public class FetchSize {
    static final String T = "pgjdbc_fetch_t";
    static final int N = 20_000;
    static String url;
    static int passed = 0, failed = 0;

    interface Check { String run() throws Exception; }

    static void test(String name, Check check) {
        try {
            System.out.println("ok - " + name + ": " + check.run());
            passed++;
        } catch (Throwable e) {
            System.out.println("FAIL - " + name + ": " + e);
            failed++;
        }
    }

    // Counts pgjdbc's protocol trace lines (logged at FINEST) that contain `needle`.
    static AtomicInteger countProtocol(String needle) {
        AtomicInteger n = new AtomicInteger();
        Logger log = Logger.getLogger("org.postgresql");
        log.setLevel(Level.FINEST);
        log.setUseParentHandlers(false);
        log.addHandler(new Handler() {
            public void publish(LogRecord r) {
                if (r.getMessage() != null && r.getMessage().contains(needle)) n.incrementAndGet();
            }
            public void flush() {}
            public void close() {}
        });
        return n;
    }

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, "eddy", "");
    }

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://127.0.0.1:" + Integer.parseInt(args[0])
            + "/eddy?preferQueryMode=extended&connectTimeout=10&socketTimeout=60";
        try (Connection admin = connect(); Statement st = admin.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + T);
            st.execute("CREATE TABLE " + T + " (id BIGINT PRIMARY KEY, name TEXT, amount BIGINT)");
            st.execute("INSERT INTO " + T + " SELECT x, 'row ' || x, x * 3 FROM generate_series(1, " + N + ") AS g(x)");
        }

        test("setFetchSize(500) over 20,000 rows", () -> {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                Set<Long> ids = new HashSet<>();
                long total = 0;
                AtomicInteger suspended = countProtocol("<=BE PortalSuspended");
                try (Statement st = conn.createStatement()) {
                    st.setFetchSize(500);
                    try (ResultSet rs = st.executeQuery("SELECT id, name, amount FROM " + T)) {
                        check(rs.getFetchSize() == 500, "result set fetch size " + rs.getFetchSize());
                        while (rs.next()) {
                            long id = rs.getLong(1);
                            check(rs.getString(2).equals("row " + id) && rs.getLong(3) == id * 3,
                                  "bad row " + id + ", " + rs.getString(2) + ", " + rs.getLong(3));
                            check(ids.add(id), "row " + id + " seen twice");
                            total += rs.getLong(3);
                        }
                    }
                }
                conn.commit();
                long want = 3L * N * (N + 1) / 2;
                check(ids.size() == N, "got " + ids.size() + " rows, want " + N);
                check(total == want, "sum " + total + ", want " + want);
                // Streamed: Execute(limit=500) ends in PortalSuspended for each full batch
                // (PostgreSQL: 40; a server that sees the end early may close the 40th batch).
                check(suspended.get() == N / 500 || suspended.get() == N / 500 - 1,
                      suspended.get() + " PortalSuspended messages, want " + N / 500 + ": not streamed");
                Logger.getLogger("org.postgresql").setLevel(Level.OFF);
                return ids.size() + " rows, sum " + total + ", " + suspended.get() + " PortalSuspended";
            }
        });

        test("setFetchSize(2) over a push query (EMIT CHANGES LIMIT 5)", () -> {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                Set<Long> ids = new HashSet<>();
                AtomicInteger suspended = countProtocol("<=BE PortalSuspended");
                try (Statement st = conn.createStatement()) {
                    st.execute("SET 'auto.offset.reset' = 'earliest'");
                    st.setFetchSize(2);
                    try (ResultSet rs = st.executeQuery("SELECT id FROM " + T + " EMIT CHANGES LIMIT 5")) {
                        while (rs.next()) {
                            check(ids.add(rs.getLong(1)), "row " + rs.getLong(1) + " seen twice");
                        }
                    }
                }
                conn.commit();
                Logger.getLogger("org.postgresql").setLevel(Level.OFF);
                check(ids.size() == 5, "got " + ids.size() + " rows, want 5");
                check(suspended.get() == 2, suspended.get() + " PortalSuspended messages, want 2");
                return ids.size() + " rows in fetches of 2, " + suspended.get() + " PortalSuspended";
            }
        });

        test("PreparedStatement with parameters (also server-prepared)", () -> {
            try (Connection conn = connect()) {
                conn.setAutoCommit(false);
                String sql = "SELECT id, name, amount FROM " + T + " WHERE id BETWEEN ? AND ? AND name <> ? ORDER BY id";
                try (PreparedStatement ps = conn.prepareStatement(sql)) {
                    ps.setFetchSize(100);
                    // pgjdbc switches to a named server-side statement after prepareThreshold (5) runs.
                    for (int run = 0; run < 8; run++) {
                        long lo = 1 + run * 1000L, hi = lo + 249;
                        ps.setLong(1, lo);
                        ps.setLong(2, hi);
                        ps.setString(3, "row " + lo);
                        long expectId = lo + 1, count = 0;
                        try (ResultSet rs = ps.executeQuery()) {
                            while (rs.next()) {
                                check(rs.getLong(1) == expectId, "run " + run + ": id " + rs.getLong(1) + ", want " + expectId);
                                check(rs.getLong(3) == expectId * 3, "run " + run + ": amount " + rs.getLong(3));
                                expectId++;
                                count++;
                            }
                        }
                        check(count == 249, "run " + run + ": " + count + " rows, want 249");
                    }
                }
                try (PreparedStatement up = conn.prepareStatement("UPDATE " + T + " SET amount = ? WHERE id = ?");
                     PreparedStatement one = conn.prepareStatement("SELECT amount, name FROM " + T + " WHERE id = ?")) {
                    up.setLong(1, -7);
                    up.setLong(2, 42);
                    check(up.executeUpdate() == 1, "UPDATE did not report 1 row");
                    conn.commit();
                    one.setLong(1, 42);
                    try (ResultSet rs = one.executeQuery()) {
                        check(rs.next() && rs.getLong(1) == -7 && rs.getString(2).equals("row 42"), "UPDATE not visible");
                        check(!rs.next(), "more than one row for id 42");
                    }
                }
                conn.commit();
                return "8 runs x 249 rows, UPDATE with parameters";
            }
        });

        try (Connection admin = connect(); Statement st = admin.createStatement()) {
            st.execute("DROP TABLE " + T);
        }
        System.out.println("FetchSize: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
