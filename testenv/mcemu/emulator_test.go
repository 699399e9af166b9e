package mcemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
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
	"google.golang.org/protobuf/encoding/protowire"
)

func newSDK(t *testing.T) (*Emulator, *odps.Odps) {
	t.Helper()
	e := New(Options{})
	t.Cleanup(e.Close)
	o := odps.NewOdps(account.NewAliyunAccount(e.AccessID(), e.AccessKey()), e.Endpoint())
	o.SetDefaultProjectName(e.Project())
	return e, o
}

var odps2 = map[string]string{"odps.sql.type.system.odps2": "true", "odps.sql.decimal.odps2": "true",
	"odps.sql.allow.schema.evolution": "true"}

func createDelta(t *testing.T, o *odps.Odps, name string, buckets int) {
	t.Helper()
	schema := tableschema.NewSchemaBuilder().Name(name).Columns(
		tableschema.Column{Name: "id", Type: datatype.BigIntType, NotNull: true},
		tableschema.Column{Name: "name", Type: datatype.StringType},
	).PrimaryKeys([]string{"id"}).TblProperties(map[string]string{
		"transactional": "true", "write.bucket.num": strconv.Itoa(buckets)}).Build()
	require.NoError(t, o.Tables().Create(schema, true, odps2, nil))
}

func TestSDKCreateLoadAlter(t *testing.T) {
	e, o := newSDK(t)
	createDelta(t, o, "t1", 4)
	// if not exists: a second create is a no-op
	createDelta(t, o, "t1", 4)

	tbl := o.Table("t1")
	require.NoError(t, tbl.Load())
	require.Equal(t, []string{"id"}, tbl.PrimaryKeys())
	require.True(t, tbl.Transactional())
	require.Equal(t, 4, tbl.ClusterInfo().BucketNum)
	require.Len(t, tbl.Schema().Columns, 2)
	require.True(t, tbl.Schema().Columns[0].NotNull)

	missing, err := o.Table("nope").Exists()
	require.NoError(t, err)
	require.False(t, missing)

	// Table.AddColumns sends no type-system hints: INT on a Delta table fails,
	// as it does on the service.
	require.ErrorContains(t, tbl.AddColumns([]tableschema.Column{{Name: "age", Type: datatype.IntType}}, true), "odps2=true")
	ins, err := o.ExecSQlWithHints("alter table shardsync.`t1` add columns if not exists (`age` INT);", odps2)
	require.NoError(t, err)
	require.NoError(t, ins.WaitForSuccess())
	ins, err = o.ExecSQlWithHints("alter table shardsync.`t1` change column `age` `age` BIGINT;", odps2)
	require.NoError(t, err)
	require.NoError(t, ins.WaitForSuccess())
	info, ok := e.Table("t1")
	require.True(t, ok)
	require.Equal(t, []Column{{"id", "BIGINT", true}, {"name", "STRING", false}, {"age", "BIGINT", false}}, info.Columns)
	require.Len(t, e.DDLLog(), 4)

	// narrowing fails the task with the server's message
	ins, err = o.ExecSQlWithHints("alter table shardsync.`t1` change column `age` `age` INT;", odps2)
	require.NoError(t, err)
	require.ErrorContains(t, ins.WaitForSuccess(), "cannot change column age from BIGINT to INT")

	// SQL outside the subset fails, so drift is caught
	ins, err = o.ExecSQl("select id from t1;")
	require.NoError(t, err)
	require.ErrorContains(t, ins.WaitForSuccess(), "not supported by the emulator")

	// 2.0 types need the hint
	ins, err = o.ExecSQl("create table shardsync.`t2` (`a` TINYINT);")
	require.NoError(t, err)
	require.ErrorContains(t, ins.WaitForSuccess(), "odps.sql.type.system.odps2=true")

	e.FailNextTask("ODPS-0010000:System internal error - injected")
	ins, err = o.ExecSQlWithHints("drop table if exists shardsync.`t1`;", odps2)
	require.NoError(t, err)
	require.ErrorContains(t, ins.WaitForSuccess(), "injected")
	_, ok = e.Table("t1")
	require.True(t, ok, "a failed task changes nothing")
}

func TestSignatureChecked(t *testing.T) {
	e := New(Options{})
	t.Cleanup(e.Close)
	o := odps.NewOdps(account.NewAliyunAccount(e.AccessID(), "wrong-secret"), e.Endpoint())
	o.SetDefaultProjectName(e.Project())
	err := o.Table("x").Load()
	var he restclient.HttpError
	require.ErrorAs(t, err, &he)
	require.Equal(t, http.StatusUnauthorized, he.StatusCode)
	require.Equal(t, "SignatureNotMatch", he.ErrorMessage.ErrorCode)
}

func TestSDKUploadSessionAtomicCommit(t *testing.T) {
	e, o := newSDK(t)
	schema := tableschema.NewSchemaBuilder().Name("plain").Columns(
		tableschema.Column{Name: "id", Type: datatype.BigIntType},
		tableschema.Column{Name: "s", Type: datatype.StringType},
		tableschema.Column{Name: "ts", Type: datatype.TimestampNtzType},
	).Build()
	require.NoError(t, o.Tables().Create(schema, true, odps2, nil))

	tun, err := tunnel.NewTunnelFromProject(o.DefaultProject())
	require.NoError(t, err)
	sess, err := tun.CreateUploadSession(e.Project(), "plain", tunnel.SessionCfg.WithDefaultDeflateCompressor())
	require.NoError(t, err)

	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	for block := range 2 {
		w, err := sess.OpenRecordWriter(block)
		require.NoError(t, err)
		for i := range 3 {
			s := data.String("row")
			require.NoError(t, w.Write(data.Record{data.BigInt(block*10 + i), s, data.TimestampNtz(ts)}))
		}
		require.NoError(t, w.Close())
	}
	require.Empty(t, e.Rows("plain"), "uploaded blocks are invisible before commit")
	require.NoError(t, sess.Commit([]int{0, 1}))
	rows := e.Rows("plain")
	require.Len(t, rows, 6)
	require.Equal(t, []any{int64(0), "row", ts}, rows[0])

	info, ok := e.UploadSession(sess.Id)
	require.True(t, ok)
	require.Equal(t, "closed", info.Status)

	// a second session that expires never shows its rows
	sess2, err := tun.CreateUploadSession(e.Project(), "plain")
	require.NoError(t, err)
	w, err := sess2.OpenRecordWriter(0)
	require.NoError(t, err)
	require.NoError(t, w.Write(data.Record{data.BigInt(99), nil, nil}))
	require.NoError(t, w.Close())
	require.True(t, e.ExpireSession(sess2.Id))
	require.NoError(t, sess2.Load())
	require.Equal(t, tunnel.UploadStatusExpired, sess2.Status())
	require.Len(t, e.Rows("plain"), 6)
}

// encodeUpsert builds one record stream for (id BIGINT, name STRING) plus
// the five meta columns, the way specs §2.10 describes.
func encodeUpsert(ids []int64, op byte) []byte {
	var buf bytes.Buffer
	w := tunnel.NewProtocStreamWriter(&buf)
	crc, crcOfCrc := tunnel.NewCrc32CheckSum(), tunnel.NewCrc32CheckSum()
	for _, id := range ids {
		crc.Update(int32(1))
		_ = w.WriteTag(1, protowire.VarintType)
		crc.Update(id)
		_ = w.WriteSInt64(id)
		crc.Update(int32(5))
		_ = w.WriteTag(5, protowire.VarintType)
		crc.Update(int64(op))
		_ = w.WriteSInt64(int64(op))
		crc.Update(int32(7))
		_ = w.WriteTag(7, protowire.BytesType)
		_ = w.WriteInt32(0)
		_ = w.WriteTag(tunnel.EndRecord, protowire.VarintType)
		v := crc.Value()
		_ = w.WriteUInt32(v)
		crc.Reset()
		crcOfCrc.Update(v)
	}
	_ = w.WriteTag(tunnel.MetaCount, protowire.VarintType)
	_ = w.WriteSInt64(int64(len(ids)))
	_ = w.WriteTag(tunnel.MetaChecksum, protowire.VarintType)
	_ = w.WriteUInt32(crcOfCrc.Value())
	return buf.Bytes()
}

func TestUpsertSessionLifecycle(t *testing.T) {
	e, o := newSDK(t)
	createDelta(t, o, "d", 2)
	rc := restclient.NewOdpsRestClient(account.NewAliyunAccount(e.AccessID(), e.AccessKey()), e.TunnelEndpoint())
	res := "/projects/" + e.Project() + "/tables/d/upserts"
	hdr := map[string]string{"x-odps-tunnel-version": "6", "odps-tunnel-date-transform": "v1"}
	do := func(method string, q url.Values, body []byte, extra map[string]string) (map[string]any, error) {
		h := map[string]string{}
		for k, v := range hdr {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := rc.NewRequestWithParamsAndHeaders(method, res, rd, q, h)
		require.NoError(t, err)
		if body != nil {
			req.ContentLength = int64(len(body))
		}
		resp, err := rc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(resp.Body)
		if len(b) > 0 {
			require.NoError(t, json.Unmarshal(b, &m))
		}
		return m, nil
	}
	sess, err := do(http.MethodPost, url.Values{"slotnum": {"2"}}, nil, nil)
	require.NoError(t, err)
	id := sess["id"].(string)
	require.Equal(t, "normal", sess["status"])
	slots := sess["slots"].([]any)
	require.Len(t, slots, 2)

	// key 1 → bucket (hash(1) ^ hash(1)>>8) % 2
	h := mix64(1)
	bucket := int((h ^ (h >> 8)) % 2)
	slot := slots[bucket%2].(map[string]any)
	put := func(b int, ids []int64) error {
		sl := slots[b%2].(map[string]any)
		_, err := do(http.MethodPut, url.Values{"upsertid": {id}, "bucketid": {strconv.Itoa(b)},
			"slotid": {sl["slot_id"].(string)}, "record_count": {strconv.Itoa(len(ids))}},
			encodeUpsert(ids, 'U'), map[string]string{"odps-tunnel-routed-server": sl["worker_addr"].(string)})
		return err
	}
	require.NoError(t, put(bucket, []int64{1}))
	err = put(1-bucket, []int64{1})
	var he restclient.HttpError
	require.ErrorAs(t, err, &he)
	require.Equal(t, "InvalidBucket", he.ErrorMessage.ErrorCode, "a key sent to the wrong bucket is refused")
	_ = slot

	require.Empty(t, e.Rows("d"), "upserts are invisible before commit")
	got, err := do(http.MethodPost, url.Values{"upsertid": {id}}, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "committing", got["status"])
	require.Equal(t, [][]any{{int64(1), nil}}, e.Rows("d"))
	got, err = do(http.MethodGet, url.Values{"upsertid": {id}}, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "committing", got["status"])
	got, err = do(http.MethodGet, url.Values{"upsertid": {id}}, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "committed", got["status"])
	require.ErrorAs(t, put(bucket, []int64{1}), &he, "no writes after commit")

	e.ForgetSession(id)
	_, err = do(http.MethodGet, url.Values{"upsertid": {id}}, nil, nil)
	require.True(t, errors.As(err, &he))
	require.Equal(t, "UpsertSessionNotFound", he.ErrorMessage.ErrorCode)
}
