package main

import (
	"context"
	"fmt"
	"os"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/twopc"
)

// withLedgerID puts the ledger's id into the sink configurations, so that
// the labels of new loads are unique to the ledger.
func (j *job) withLedgerID(led *ledger.Ledger) {
	if j.dorisCfg != nil {
		c := *j.dorisCfg
		c.LedgerID = led.ID()
		j.dorisCfg = &c
	}
}

// claimTargets checks, before anything is loaded, that every route's target
// holds no rows of another ledger, and records this ledger at each target
// (see twopc.Claimer). It runs on the bare sinks: instrumented wrappers do
// not implement twopc.Claimer.
func (j *job) claimTargets(ctx context.Context, led *ledger.Ledger, sinks []twopc.Sink, routes []targetRoute) error {
	resume, err := led.Resume()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	o := twopc.Owner{
		LedgerID: led.ID(),
		Holder:   fmt.Sprintf("%s pid %d, ledger file %s", host, os.Getpid(), j.ledger),
		Adopt:    led.IDAssigned(),
		Fresh:    resume == nil,
		Recreate: j.opts.recreateTarget,
	}
	if j.opts.kafka.brokers != "" && j.opts.kafka.partitions != "" {
		// One of several processes splitting a topic by partitions.
		o.Share = j.prefix
	}
	var targets []change.TableID
	for _, rt := range routes {
		targets = append(targets, rt.target)
	}
	for _, s := range sinks {
		c, ok := s.(twopc.Claimer)
		if !ok {
			continue
		}
		if err := c.ClaimTargets(ctx, targets, o); err != nil {
			return err
		}
	}
	return nil
}
