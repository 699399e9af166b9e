package mcemu

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/account"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/restclient"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tableschema"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tunnel"
	"github.com/stretchr/testify/require"
)

// The real SDK against a schema-model project with a partitioned table:
// schema creation, three-part DDL, Table.Load with curr_schema, partition
// creation by SQL and by create_partition, per-partition upload sessions
// and the errors for a missing or malformed partition.
func TestSDKSchemaModelPartitionedUpload(t *testing.T) {
	e := New(Options{SchemaModel: true})
	t.Cleanup(e.Close)
	o := odps.NewOdps(account.NewAliyunAccount(e.AccessID(), e.AccessKey()), e.Endpoint())
	o.SetDefaultProjectName(e.Project())

	p := o.Project(e.Project())
	require.NoError(t, p.Load())
	require.Equal(t, "true", p.PropertiesHasBeSet().Get("odps.schema.model.enabled"))
	require.NoError(t, p.Schemas().Create("sales", true, ""))
	require.NoError(t, p.Schemas().Create("sales", true, ""), "if not exists")

	schema := tableschema.NewSchemaBuilder().Name("orders").Columns(
		tableschema.Column{Name: "id", Type: datatype.BigIntType},
	).PartitionColumns(tableschema.Column{Name: "ds", Type: datatype.StringType}).Build()
	sql, err := schema.ToSQLString(e.Project(), "sales", true)
	require.NoError(t, err)
	hints := map[string]string{"odps.namespace.schema": "true"}
	ins, err := o.ExecSQlWithHints(sql, hints)
	require.NoError(t, err)
	require.NoError(t, ins.WaitForSuccess())
	ins, err = o.ExecSQl(sql) // a three-part name without the namespace hint fails
	require.NoError(t, err)
	require.ErrorContains(t, ins.WaitForSuccess(), "needs the hint odps.namespace.schema=true")

	tbl := odps.NewTable(o, e.Project(), "sales", "orders")
	require.NoError(t, tbl.Load())
	require.Len(t, tbl.Schema().Columns, 1)
	require.Len(t, tbl.Schema().PartitionColumns, 1)
	require.Equal(t, "ds", tbl.Schema().PartitionColumns[0].Name)

	ins, err = o.ExecSQlWithHints("alter table "+e.Project()+".`sales`.`orders` add if not exists partition (`ds`='d1');", hints)
	require.NoError(t, err)
	require.NoError(t, ins.WaitForSuccess())

	tun, err := tunnel.NewTunnelFromProject(o.DefaultProject())
	require.NoError(t, err)
	upload := func(part string, create bool, ids ...int64) error {
		opts := []tunnel.Option{tunnel.SessionCfg.WithSchemaName("sales"), tunnel.SessionCfg.WithPartitionKey(part)}
		if create {
			opts = append(opts, tunnel.SessionCfg.WithCreatePartition())
		}
		s, err := tun.CreateUploadSession(e.Project(), "orders", opts...)
		if err != nil {
			return err
		}
		w, err := s.OpenRecordWriter(0)
		require.NoError(t, err)
		for _, id := range ids {
			require.NoError(t, w.Write(data.Record{data.BigInt(id)}))
		}
		require.NoError(t, w.Close())
		return s.Commit([]int{0})
	}
	require.NoError(t, upload("ds='d1'", false, 1, 2))
	err = upload("ds=d2", false, 3)
	var he restclient.HttpError
	require.ErrorAs(t, err, &he)
	require.Equal(t, 404, he.StatusCode)
	require.Equal(t, "NoSuchPartition", he.ErrorMessage.ErrorCode)
	require.NoError(t, upload("ds=d2", true, 3))
	require.ErrorContains(t, upload("dt=d2", true, 4), "InvalidPartitionSpec")
	require.ErrorContains(t, upload("ds=a/b", true, 4), "InvalidPartitionSpec")

	require.Equal(t, []string{"ds=d1", "ds=d2"}, e.Partitions("sales.orders"))
	require.Equal(t, [][]any{{int64(1), "d1"}, {int64(2), "d1"}, {int64(3), "d2"}}, e.Rows("sales.orders"))
	require.Nil(t, e.Rows("orders"), "not in schema default")
}

// Upsert sessions expire when idle or past their lifecycle; any request
// keeps an open session from its idle timeout.
func TestUpsertSessionIdleAndLifetime(t *testing.T) {
	e := New(Options{UpsertIdleTimeout: 150 * time.Millisecond, LifecycleHour: 600 * time.Millisecond})
	t.Cleanup(e.Close)
	o := odps.NewOdps(account.NewAliyunAccount(e.AccessID(), e.AccessKey()), e.Endpoint())
	o.SetDefaultProjectName(e.Project())
	createDelta(t, o, "d", 2)
	rc := restclient.NewOdpsRestClient(o.Account(), e.TunnelEndpoint())
	create := func() string { return createUpsert(t, rc, "d", "1").ID }
	status := func(id string) string {
		s, ok := e.UpsertSession(id)
		require.True(t, ok)
		return s.Status
	}

	idle := create()
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, "expired", status(idle), "idle longer than the timeout")

	kept, start := create(), time.Now()
	for range 40 { // reloaded every 50 ms, up to 2 s: past the 600 ms lifecycle
		time.Sleep(50 * time.Millisecond)
		if getUpsert(t, rc, "d", kept) != "normal" {
			break
		}
	}
	require.Equal(t, "expired", status(kept), "reloads keep it from idling, not past its lifecycle")
	require.Greater(t, time.Since(start), 550*time.Millisecond, "open well past the idle timeout while reloaded")
}

type upsertDoc struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func upsertCall(t *testing.T, rc restclient.RestClient, method, table string, q url.Values) upsertDoc {
	t.Helper()
	req, err := rc.NewRequestWithParamsAndHeaders(method, "/projects/shardsync/tables/"+table+"/upserts", nil, q,
		map[string]string{"x-odps-tunnel-version": "6"})
	require.NoError(t, err)
	resp, err := rc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var d upsertDoc
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&d))
	return d
}

func createUpsert(t *testing.T, rc restclient.RestClient, table, lifecycle string) upsertDoc {
	return upsertCall(t, rc, http.MethodPost, table, url.Values{"lifecycle": {lifecycle}})
}

func getUpsert(t *testing.T, rc restclient.RestClient, table, id string) string {
	return upsertCall(t, rc, http.MethodGet, table, url.Values{"upsertid": {id}}).Status
}
