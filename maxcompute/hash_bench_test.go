package maxcompute

import (
	"testing"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
)

// BenchmarkBucket routes one merged employees key (database_name,
// table_name, emp_no) to its Delta table bucket, as every upserted or
// deleted row is.
func BenchmarkBucket(b *testing.B) {
	keys := []data.Data{data.String("emp_1"), data.String("employees_1"), data.BigInt(10001)}
	types := []datatype.DataType{datatype.StringType, datatype.StringType, datatype.BigIntType}
	hashes := make([]int32, len(keys))
	b.ReportAllocs()
	for b.Loop() {
		for i, k := range keys {
			h, err := hashValue(k, types[i])
			if err != nil {
				b.Fatal(err)
			}
			hashes[i] = h
		}
		if n := bucketOf(hashes, 16); n < 0 || n >= 16 {
			b.Fatalf("bucket %d out of range", n)
		}
	}
}

// BenchmarkHashValue is the hash of single key values by type.
func BenchmarkHashValue(b *testing.B) {
	dec := datatype.NewDecimalType(18, 4)
	for _, tc := range []struct {
		name string
		v    data.Data
		t    datatype.DataType
	}{
		{"bigint", data.BigInt(1234567890), datatype.BigIntType},
		{"string", data.String("employees_12"), datatype.StringType},
		{"datetime", data.DateTime(time.Date(2024, 2, 29, 1, 2, 3, 0, time.UTC)), datatype.DateTimeType},
		{"decimal", data.NewDecimal(18, 4, "12345.6789"), dec},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := hashValue(tc.v, tc.t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
