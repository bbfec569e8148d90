// pgjdbc logging in to Eddy with SCRAM-SHA-256 over TLS: sslmode=verify-full
// against the test CA; a wrong password is 28P01.
//
// Usage: java -cp /usr/share/java/postgresql.jar Auth.java PORT CA_FILE
// (role `app`, password `app-secret`). Prints one line per check group,
// then 'Auth: N passed, M failed'; exits 1 if any group failed.
import java.sql.*;
import java.util.Properties;

public class Auth {
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

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    public static void main(String[] args) {
        String url = "jdbc:postgresql://localhost:" + Integer.parseInt(args[0]) + "/eddy";
        String ca = args[1];
        test("pgjdbc logs in with SCRAM over verify-full TLS", () -> {
            Properties props = new Properties();
            props.setProperty("user", "app");
            props.setProperty("password", "app-secret");
            props.setProperty("sslmode", "verify-full");
            props.setProperty("sslrootcert", ca);
            try (Connection conn = DriverManager.getConnection(url, props);
                 Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT current_user")) {
                check(rs.next(), "no row");
                String user = rs.getString(1);
                check(user.equals("app"), "current_user " + user);
                return user;
            }
        });
        test("pgjdbc gets 28P01 for a wrong password", () -> {
            Properties props = new Properties();
            props.setProperty("user", "app");
            props.setProperty("password", "nope");
            props.setProperty("sslmode", "require");
            try (Connection conn = DriverManager.getConnection(url, props)) {
                throw new AssertionError("a wrong password logged in");
            } catch (SQLException e) {
                check("28P01".equals(e.getSQLState()), "state " + e.getSQLState() + ": " + e.getMessage());
                return e.getSQLState();
            }
        });
        System.out.println("Auth: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
