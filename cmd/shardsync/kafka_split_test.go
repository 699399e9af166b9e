package main

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestKafkaSplitPartitionsTwoProcesses runs the documented scale-out: two
// shardsync processes share one 4-partition TiCDC topic by static
// assignment (--kafka-partitions 0-1 and 2-3), each with its own ledger
// and label prefix, into the same Doris and MaxCompute target, while both
// are SIGKILLed now and then, the second started after the first loaded
// rows. Both sinks end equal to the model and every
// change is applied exactly once: neither process refuses the target the
// other one writes, and neither reads the other's partitions.
func TestKafkaSplitPartitionsTwoProcesses(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	r := newKafkaRig(t, "tidb", 4)
	dir := t.TempDir()
	base := r.args
	argsFor := func(parts, name string) []string {
		return append(slices.Clone(base), "--kafka-partitions", parts,
			"--ledger", filepath.Join(dir, name+".ledger"), "--label-prefix", "split_"+name)
	}
	procs := [][]string{argsFor("0-1", "a"), argsFor("2-3", "b")}
	start := func(i int) *child {
		c := startChild(t, procs[i], r.env...)
		r.runs = append(r.runs, c)
		return c
	}

	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		prng := rand.New(rand.NewPCG(uint64(seed), 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r.step(t, prng)
		}
	}()
	// The second process starts after the first has loaded rows into the
	// shared target, as under a process manager starting them in turn.
	running := []*child{start(0), nil}
	require.Eventually(t, func() bool {
		rows, err := r.emu.Rows(kDB, kTable)
		return err == nil && len(rows) > 0
	}, 60*time.Second, 100*time.Millisecond, "the first process loaded nothing")
	running[1] = start(1)
	for range 8 {
		time.Sleep(time.Duration(200+rng.IntN(700)) * time.Millisecond)
		i := rng.IntN(2)
		require.False(t, running[i].exited(), "shardsync %d exited by itself:\n%s", i, bufferTail(running[i].out.String(), 30))
		running[i].kill(t)
		running[i] = start(i)
	}
	close(stop)
	<-produced
	r.finish(t)
	r.waitConverged(t, running[0], 90*time.Second)
	for i, c := range running {
		require.False(t, c.exited(), "shardsync %d exited:\n%s", i, bufferTail(c.out.String(), 30))
		require.Equal(t, 0, c.stop(t), "SIGTERM must stop shardsync %d cleanly:\n%s", i, bufferTail(c.out.String(), 20))
	}
	n := r.requireExactlyOnce(t)
	t.Logf("%d changes over two processes, each applied exactly once in Doris; both sinks equal the model (%d rows)", n, len(r.want()))
}
