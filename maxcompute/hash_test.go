package maxcompute

import (
	"testing"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps/data"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/stretchr/testify/require"
)

// Vectors from the Java SDK's TypeHasherTest
// (odps-sdk-core/src/test/java/com/aliyun/odps/tunnel/hasher/TypeHasherTest.java).
func TestHashJavaVectors(t *testing.T) {
	longs := map[int64]int32{
		0: 0, 1: 357654460, -1: 357653185, 10: -718433742, -10: -718434491, 127: -1788925397,
		-128: -1465040036, 32767: -1575889593, -32768: -1388281606, 0x7FFFFFFF: 2011537724,
		-0x80000000: -1789595061, 9223372036854775807: -1977349188, -9223372036854775808: -1787473579,
	}
	for v, want := range longs {
		got, err := hashValue(data.BigInt(v), datatype.BigIntType)
		require.NoError(t, err)
		require.Equal(t, want, got, "bigint %d", v)
	}
	i, err := hashValue(data.Int(10), datatype.IntType)
	require.NoError(t, err)
	require.Equal(t, int32(-718433742), i)

	// DATETIME hashes epoch millis
	dt, err := hashValue(data.DateTime(time.UnixMilli(-10)), datatype.DateTimeType)
	require.NoError(t, err)
	require.Equal(t, int32(-718434491), dt)
	d0, err := hashValue(data.Date(time.Unix(0, 0).UTC()), datatype.DateType)
	require.NoError(t, err)
	require.Equal(t, int32(0), d0)

	bt, _ := hashValue(data.Bool(true), datatype.BooleanType)
	bf, _ := hashValue(data.Bool(false), datatype.BooleanType)
	require.Equal(t, int32(388737479), bt)
	require.Equal(t, int32(-978963218), bf)

	floats := map[float32]int32{0: 0, 1.99: -567953753, -1.99: 405646127, 2.001: 1233114570, -2.0001: 368473317,
		3.402823466e+38: 278239804, 1.175494351e-38: 1080079518, 1.4e-45: 357654460}
	for v, want := range floats {
		got, err := hashValue(data.Float(v), datatype.FloatType)
		require.NoError(t, err)
		require.Equal(t, want, got, "float %v", v)
	}
	doubles := map[float64]int32{0: 0, 1.99: -670340059, -1.99: -818909319, 12.3456: -1588151741, -12.3456: -282296198,
		1.7976931348623158e+308: 525598140, 2.2250738585072014e-308: -1071819094, 4.9e-324: 357654460}
	for v, want := range doubles {
		got, err := hashValue(data.Double(v), datatype.DoubleType)
		require.NoError(t, err)
		require.Equal(t, want, got, "double %v", v)
	}
	strs := map[string]int32{"": 0, "1": -2140438327, "a1b()2c3": -866984865, "$%ef&*": 2003021223,
		"阿里巴巴云计算": 1623550194, "*^c哦也哈*#": -1224825444, "  1  ": -967043897, "1   牛": -1507343086, "+_+ = ++": 966471106}
	for v, want := range strs {
		got, err := hashValue(data.String(v), datatype.StringType)
		require.NoError(t, err)
		require.Equal(t, want, got, "string %q", v)
	}

	ts1, _ := hashValue(data.Timestamp(time.Unix(1, 2)), datatype.TimestampType)
	require.Equal(t, int32(1508957768), ts1)
	ts2, _ := hashValue(data.TimestampNtz(time.Unix(36925, 147258369)), datatype.TimestampNtzType)
	require.Equal(t, int32(1469401250), ts2)

	combine := func(v ...int32) int32 {
		var s int32
		for _, x := range v {
			s += x
		}
		return s ^ (s >> 8)
	}
	require.Equal(t, int32(979604186), combine(0, 0, 0, 0, 0, 0, 0, -978963218, 0, 0, 0, 0, 0))
	require.Equal(t, int32(966550009), combine(357654460, 715307540, 1072960876, 357654460, 357654460,
		357654460, 357654460, 388737479, -567953753, -670340059, -2140438327, 1469401250, -1088782317))
	require.Equal(t, int32(563915101), combine(357653185, 715306435, 1072959681, 357653185, 357653185,
		357653185, 357653185, 388737479, 405646127, -818909319, -866984865, -64049556, -2054932282))
	require.Equal(t, 979604186%16, bucketOf([]int32{-978963218}, 16))
}

func TestHashDecimalJavaVectors(t *testing.T) {
	type vec struct {
		s           string
		hash, final int32
	}
	small := []vec{{"0", 0, 0}, {"1", 1405592006, 1402234471}, {"-1", 1405574141, 1402248358},
		{"3.22", -731948052, 730530999}, {"-3.22", -731955013, 730537979}, {"12.34", -904458774, 903682791},
		{"-12.34", -904460195, 903683925}, {"2.5", -713505855, 716028674}, {"-2.5", -713498858, 716023753},
		{"4.9", -708377772, 705872983}, {"-4.9", -708362397, 705886300}, {"6.4", 1264831551, 1260957683},
		{"-6.4", 1264830356, 1260954707}}
	for _, prec := range []int32{4, 9, 18} {
		for _, v := range small {
			got, err := hashValue(data.NewDecimal(int(prec), 2, v.s), datatype.NewDecimalType(prec, 2))
			require.NoError(t, err)
			require.Equal(t, v.hash, got, "decimal(%d,2) %s", prec, v.s)
			require.Equal(t, v.final, got^(got>>8))
		}
	}
	big := []vec{{"0", 0, 0}, {"1", -419049619, 417516194}, {"-1", 845713778, 844823011},
		{"3.22", 767759606, 770627554}, {"-3.22", 1356370932, 1351109479}, {"12.34", -476504367, 477792207},
		{"-12.34", 250967822, 251363961}, {"2.5", -1271677481, 1267175018}, {"-2.5", -1715482525, 1713794995},
		{"4.9", 1252387462, 1257197420}, {"-4.9", 1584384421, 1580312172}, {"6.4", -1846789132, 1853741007},
		{"-6.4", -692413333, 694953719}}
	for _, v := range big {
		got, err := hashValue(data.NewDecimal(38, 18, v.s), datatype.NewDecimalType(38, 18))
		require.NoError(t, err)
		require.Equal(t, v.hash, got, "decimal(38,18) %s", v.s)
		require.Equal(t, v.final, got^(got>>8))
	}
}
