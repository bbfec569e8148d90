// Eddy with pgjdbc: batched inserts report their row counts, and the
// DatabaseMetaData calls that DBeaver, DataGrip and Metabase make on
// connect (getTables, getColumns, getPrimaryKeys, getSchemas, getTypeInfo,
// getImportedKeys, getIndexInfo) describe Eddy's relations.
//
// Usage: java -cp /usr/share/java/postgresql.jar tests/clients/java/MetaData.java PORT
// Prints one line per check group, then 'MetaData: N passed, M failed';
// exits 1 if any group failed.
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class MetaData {
    static final String T = "jdbc_meta_orders";
    static final String V = "jdbc_meta_totals";
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

    static void check(boolean cond, String msg) {
        if (!cond) throw new AssertionError(msg);
    }

    static List<String> column(ResultSet rs, String name) throws SQLException {
        List<String> values = new ArrayList<>();
        while (rs.next()) values.add(rs.getString(name));
        rs.close();
        return values;
    }

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://127.0.0.1:" + Integer.parseInt(args[0])
            + "/eddy?connectTimeout=10&socketTimeout=60";
        try (Connection c = DriverManager.getConnection(url, "eddy", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("DROP MATERIALIZED VIEW IF EXISTS " + V);
                s.execute("DROP TABLE IF EXISTS " + T);
                s.execute("CREATE TABLE " + T + " (id BIGINT PRIMARY KEY, customer VARCHAR(20) NOT NULL, "
                    + "amount NUMERIC(10,2) DEFAULT 0)");
                s.execute("CREATE MATERIALIZED VIEW " + V + " AS SELECT customer, count(*) AS n FROM " + T
                    + " GROUP BY customer");
            }

            test("executeBatch", () -> {
                try (PreparedStatement p = c.prepareStatement("INSERT INTO " + T + " VALUES (?, ?, ?)")) {
                    for (int i = 1; i <= 3; i++) {
                        p.setLong(1, i);
                        p.setString(2, "c" + (i % 2));
                        p.setBigDecimal(3, new java.math.BigDecimal(i + ".25"));
                        p.addBatch();
                    }
                    int[] counts = p.executeBatch();
                    check(counts.length == 3, "batch of " + counts.length);
                    for (int n : counts) check(n == 1, "batch counts " + java.util.Arrays.toString(counts));
                    p.setLong(1, 4);
                    p.setString(2, "c9");
                    p.setBigDecimal(3, java.math.BigDecimal.ONE);
                    check(p.executeUpdate() == 1, "executeUpdate count");
                }
                try (Statement s = c.createStatement();
                     ResultSet rs = s.executeQuery("SELECT count(*) FROM " + T)) {
                    rs.next();
                    check(rs.getLong(1) == 4, "rows " + rs.getLong(1));
                }
                return "3 batched inserts counted 1 each";
            });

            DatabaseMetaData md = c.getMetaData();
            test("getTables", () -> {
                List<String> tables = column(md.getTables(null, "public", "%", new String[] {"TABLE"}), "TABLE_NAME");
                check(tables.contains(T), "tables " + tables);
                check(!tables.contains(V), "a materialized view listed as a table");
                List<String> views = column(md.getTables(null, "public", "%", new String[] {"MATERIALIZED VIEW"}), "TABLE_NAME");
                check(views.contains(V), "materialized views " + views);
                List<String> all = column(md.getTables(null, null, "jdbc_meta%", null), "TABLE_NAME");
                check(all.contains(T) && all.contains(V), "all relations " + all);
                return tables.size() + " tables, " + views.size() + " materialized views";
            });
            test("getColumns", () -> {
                List<String> described = new ArrayList<>();
                try (ResultSet rs = md.getColumns(null, "public", T, "%")) {
                    while (rs.next()) {
                        described.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + "("
                            + rs.getInt("COLUMN_SIZE") + "," + rs.getInt("DECIMAL_DIGITS") + ") "
                            + (rs.getInt("NULLABLE") == DatabaseMetaData.columnNoNulls ? "not null" : "null")
                            + " default " + rs.getString("COLUMN_DEF"));
                    }
                }
                List<String> want = List.of(
                    "id int8(19,0) not null default null",
                    "customer varchar(20,0) not null default null",
                    "amount numeric(10,2) null default 0");
                check(described.equals(want), "columns " + described + ", want " + want);
                List<String> viewColumns = column(md.getColumns(null, "public", V, "%"), "COLUMN_NAME");
                check(viewColumns.equals(List.of("customer", "n")), "view columns " + viewColumns);
                return described.size() + " columns with sizes and defaults";
            });
            test("getPrimaryKeys", () -> {
                List<String> keys = new ArrayList<>();
                try (ResultSet rs = md.getPrimaryKeys(null, "public", T)) {
                    while (rs.next()) {
                        keys.add(rs.getString("COLUMN_NAME") + "@" + rs.getInt("KEY_SEQ") + " " + rs.getString("PK_NAME"));
                    }
                }
                check(keys.equals(List.of("id@1 " + T + "_pkey")), "primary keys " + keys);
                List<String> none = column(md.getPrimaryKeys(null, "public", V), "COLUMN_NAME");
                check(none.isEmpty(), "a materialized view has no primary key: " + none);
                return "key " + keys;
            });
            test("getSchemas", () -> {
                List<String> schemas = column(md.getSchemas(), "TABLE_SCHEM");
                check(schemas.contains("public") && schemas.contains("pg_catalog"), "schemas " + schemas);
                return schemas.size() + " schemas";
            });
            test("getTypeInfo", () -> {
                List<String> types = column(md.getTypeInfo(), "TYPE_NAME");
                for (String t : List.of("int8", "varchar", "numeric", "bool", "timestamptz", "jsonb", "text")) {
                    check(types.contains(t), "type info lacks " + t);
                }
                return types.size() + " types";
            });
            test("getImportedKeys and getIndexInfo", () -> {
                List<String> imported = column(md.getImportedKeys(null, "public", T), "FKCOLUMN_NAME");
                check(imported.isEmpty(), "foreign keys " + imported);
                List<String> indexes = new ArrayList<>();
                try (ResultSet rs = md.getIndexInfo(null, "public", T, false, false)) {
                    while (rs.next()) {
                        indexes.add(rs.getString("INDEX_NAME") + " " + rs.getString("COLUMN_NAME") + "@"
                            + rs.getInt("ORDINAL_POSITION") + (rs.getBoolean("NON_UNIQUE") ? " non-unique" : " unique"));
                    }
                }
                check(indexes.equals(List.of(T + "_pkey id@1 unique")), "indexes " + indexes);
                return "no foreign keys; " + indexes;
            });

            try (Statement s = c.createStatement()) {
                s.execute("DROP MATERIALIZED VIEW " + V);
                s.execute("DROP TABLE " + T);
            }
        }
        System.out.println("MetaData: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
