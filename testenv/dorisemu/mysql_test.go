package dorisemu

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/stretchr/testify/require"
)

func TestMySQLPort(t *testing.T) {
	e, err := Start(Options{Password: "pw"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })

	_, err = client.Connect(e.QueryAddr(), "root", "wrong", "")
	require.Error(t, err, "wrong password must be refused")

	c, err := client.Connect(e.QueryAddr(), "root", "pw", "")
	require.NoError(t, err)
	defer c.Close()
	exec := func(q string) *mysql.Result {
		t.Helper()
		r, err := c.Execute(q)
		require.NoError(t, err, q)
		return r
	}
	exec("CREATE DATABASE IF NOT EXISTS shop")
	exec("CREATE DATABASE IF NOT EXISTS shop")
	_, err = c.Execute("CREATE DATABASE shop")
	require.ErrorContains(t, err, "database exists")
	exec("USE shop")
	exec("SET NAMES utf8mb4")
	exec("SELECT @@version_comment LIMIT 1")
	exec("CREATE TABLE `orders` (`db_name` VARCHAR(64) NOT NULL, `id` BIGINT NOT NULL, `amount` DECIMAL(10, 2) NULL COMMENT 'paid', " +
		"`at` DATETIME) UNIQUE KEY(`db_name`, `id`) DISTRIBUTED BY HASH(`id`) BUCKETS 4 PROPERTIES (\"replication_num\" = \"1\")")
	_, err = c.Execute("CREATE TABLE bad (a INT, b INT) UNIQUE KEY(b) DISTRIBUTED BY HASH(b)")
	require.ErrorContains(t, err, "Key columns should be a ordered prefix of the schema")
	exec("ALTER TABLE orders ADD COLUMN note VARCHAR(20) DEFAULT 'none'")

	r := exec("SHOW CREATE TABLE orders")
	create, err := r.GetString(0, 1)
	require.NoError(t, err)
	require.Contains(t, create, "CREATE TABLE `orders` (\n  `db_name` VARCHAR(64) NOT NULL,\n  `id` BIGINT NOT NULL,\n  `amount` DECIMAL(10, 2) NULL COMMENT \"paid\",")
	require.Contains(t, create, "`note` VARCHAR(20) NULL DEFAULT \"none\"")
	require.Contains(t, create, "UNIQUE KEY(`db_name`, `id`)")
	require.Contains(t, create, "DISTRIBUTED BY HASH(`id`) BUCKETS 4")
	require.Contains(t, create, "\"replication_num\" = \"1\"")

	// Load three rows over HTTP, one per shard db, then query them.
	r2 := beLoadPath(t, e, "/api/shop/orders/_stream_load", "o1", "s0\t1\t9.50\t2024-01-01 00:00:00\ns1\t1\t3\t\\N\ns0\t2\t\\N\t\\N",
		map[string]string{"columns": "db_name,id,amount,at", "Authorization": "Basic cm9vdDpwdw=="}) // root:pw
	require.Equal(t, "Success", r2.str("Status"), r2.Raw)

	r = exec("SELECT COUNT(*) FROM orders")
	n, err := r.GetInt(0, 0)
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	r = exec("select id, amount, note from shop.orders where db_name = 's0' order by id desc limit 1")
	require.Equal(t, 1, r.RowNumber())
	id, _ := r.GetInt(0, 0)
	require.Equal(t, int64(2), id)
	note, _ := r.GetString(0, 2)
	require.Equal(t, "none", note)
	r = exec("SELECT * FROM orders ORDER BY amount LIMIT 2")
	require.Equal(t, 2, r.RowNumber())
	require.Equal(t, 5, r.ColumnNumber())
	amt, _ := r.GetString(1, 2)
	require.Equal(t, "3.00", amt)

	r = exec("DESC orders")
	require.Equal(t, 5, r.RowNumber())
	f, _ := r.GetString(2, 0)
	require.Equal(t, "amount", f)
	r = exec("SHOW TABLES")
	tn, _ := r.GetString(0, 0)
	require.Equal(t, "orders", tn)
	r = exec("SHOW DATABASES")
	require.Equal(t, 2, r.RowNumber())

	for q, want := range map[string]string{
		"INSERT INTO orders VALUES ('x', 1, 1, NULL, NULL)":                                   "does not support statements starting with INSERT",
		"SELECT sum(amount) FROM orders":                                                      "does not support function SUM in SELECT",
		"CREATE TABLE agg (a INT, b INT SUM) AGGREGATE KEY(a)":                                "does not support SUM in column definitions",
		"SELECT * FROM nope":                                                                  "Unknown table 'nope'",
		"UPDATE orders SET amount = 1":                                                        "does not support statements starting with UPDATE",
		"ALTER TABLE orders DROP COLUMN note":                                                 "does not support ALTER TABLE clauses other than ADD COLUMN",
		"SELECT id FROM orders WHERE amount + 1 = 2":                                          "does not support operator + in WHERE",
		"CREATE TABLE shop.arr (a INT, b ARRAY<INT>) DUPLICATE KEY(a) DISTRIBUTED BY HASH(a)": "does not support complex type ARRAY",
	} {
		_, err := c.Execute(q)
		require.ErrorContains(t, err, want, q)
	}
}

// TestPersistence: state survives a restart with the same Dir; PREPARE txns
// do not (like a real FE).
func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	e1, err := Start(Options{Dir: dir, PublishDelay: time.Hour})
	require.NoError(t, err)
	require.NoError(t, e1.Exec("CREATE DATABASE demo"))
	require.NoError(t, e1.Exec(testDDL))
	require.NoError(t, e1.Exec("ALTER TABLE demo.users ADD COLUMN tag VARCHAR(4) DEFAULT 't'"))
	e1.Faults().SetPublishDelay(0)
	v := precommitted(t, e1, "p1")
	st, _ := commitID(t, e1, v)
	require.Equal(t, "Success", st)
	pre := precommitted(t, e1, "p2")
	a := userAborted(t, e1, "p3")
	e1.Faults().SetPublishDelay(time.Hour)
	com := precommitted(t, e1, "p4")
	st, _ = commitID(t, e1, com)
	require.Equal(t, "Success", st)
	finish := openLoad(t, e1, "p5") // cut by Close: rolled back
	e1.Faults().ResetMidBody(3, true)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+e1.BEHTTPAddr()+"/api/demo/users/_stream_load",
		strings.NewReader(`{"id":9}`))
	require.NoError(t, err)
	req.SetBasicAuth("root", "")
	req.Header.Set("label", "p7")
	req.Header.Set("format", "json")
	_, err = noRedirectClient().Do(req)
	require.Error(t, err, "the BE resets the connection")
	ti, _ := e1.Txn("p7")
	require.Equal(t, StatePrepare, ti.State, "a BE dying mid-load leaves the txn PREPARE")
	require.NoError(t, e1.Close())
	finish(false)

	e2, err := Start(Options{Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e2.Close()) })
	rows, err := e2.Rows("demo", "users")
	require.NoError(t, err)
	require.Equal(t, []map[string]any{{"id": int64(7), "name": "x", "score": nil, "born": nil, "tag": "t"}}, rows)
	for id, want := range map[int64]TxnState{v: StateVisible, pre: StatePrecommitted, a: StateAborted, com: StateCommitted} {
		ti, ok := e2.TxnByID(id)
		require.True(t, ok, "txn %d", id)
		require.Equal(t, want, ti.State, "txn %d", id)
	}
	_, ok := e2.Txn("p7")
	require.False(t, ok, "PREPARE txns are not durable")
	ti, ok = e2.Txn("p5")
	require.True(t, ok)
	require.Equal(t, StateAborted, ti.State)
	st, msg := commitID(t, e2, pre)
	require.Equal(t, "Success", st, msg)
	r := load2PC(t, e2, "p1", `{"id":1}`)
	require.Equal(t, "FINISHED", r.str("ExistingJobStatus"))
	r = load2PC(t, e2, "p6", `{"id":1}`)
	require.Greater(t, r.num("TxnId"), com, "txn ids keep increasing")
	require.Len(t, e2.Loads(), 3)
	require.Equal(t, int64(7), e2.Loads()[0].Ops[0].Row["id"])
	require.NoError(t, e2.Exec("SELECT COUNT(*) FROM demo.users"))
}
