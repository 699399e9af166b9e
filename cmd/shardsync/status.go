package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardsync/shardsync/ledger"
	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/twopc"
)

// statusReport is what `shardsync status` shows, for a running job (from
// its /status endpoint) or a stopped one (from its ledger). It never holds
// a secret.
type statusReport struct {
	Job    string        `json:"job,omitempty"`
	State  string        `json:"state"` // running, stopped
	Phase  string        `json:"phase"` // recovering, connecting, snapshot, streaming, waiting, failed
	From   string        `json:"from"`  // where the report came from
	Ledger string        `json:"ledger,omitempty"`
	Uptime string        `json:"uptime,omitempty"`
	Error  string        `json:"last_error,omitempty"`
	Flavor string        `json:"source_flavor,omitempty"`
	Tables []tableStatus `json:"tables"`

	LastCommittedEpoch uint64     `json:"last_committed_epoch"`
	LastCommitTime     *time.Time `json:"last_commit_time,omitempty"`
	NextEpoch          uint64     `json:"next_epoch,omitempty"`
	Position           string     `json:"position"` // binlog position the job resumes at
	BinlogLagSeconds   *float64   `json:"binlog_lag_seconds,omitempty"`
	FreshnessSeconds   *float64   `json:"freshness_seconds,omitempty"`

	Unfinished []unfinishedEpoch `json:"unfinished"`
	InDoubt    bool              `json:"in_doubt"`
	// Unreachable lists the components the job is waiting for (outages).
	Unreachable []outageStatus `json:"unreachable,omitempty"`

	// Departed are the shards that left their routes (DROP, RENAME out)
	// while this process ran; ShardDeletes the shard deletes the ledger
	// still remembers; Decisions the operator's skip-event decisions.
	Departed     []merge.Departed  `json:"departed,omitempty"`
	ShardDeletes []shardDeleteInfo `json:"shard_deletes,omitempty"`
	Decisions    []ledger.Decision `json:"decisions,omitempty"`

	// Slot is the PostgreSQL source's replication slot (running jobs).
	Slot *slotStatus `json:"postgres_slot,omitempty"`
}

type shardDeleteInfo struct {
	Epoch  uint64 `json:"epoch"`
	State  string `json:"state"`
	Shard  string `json:"shard"`
	Target string `json:"target"`
	Cause  string `json:"cause"`
}

type tableStatus struct {
	Table         string `json:"table"`
	Target        string `json:"target,omitempty"`
	Rows          int64  `json:"rows"`
	EstimatedRows int64  `json:"estimated_rows,omitempty"`
	Chunks        int    `json:"chunks"`
	Done          bool   `json:"done"`
}

type unfinishedEpoch struct {
	Epoch   uint64   `json:"epoch"`
	State   string   `json:"state"`
	Action  string   `json:"action,omitempty"`
	Explain string   `json:"explain,omitempty"`
	Labels  []string `json:"labels,omitempty"`
}

// status reports the running job.
func (m *monitor) status() statusReport {
	phase, src := m.currentPhase()
	m.mu.Lock()
	r := statusReport{Job: m.name, State: "running", Phase: phase, From: "http", Error: m.lastErr,
		Uptime: time.Since(m.started).Round(time.Second).String(), LastCommittedEpoch: m.committed, Tables: []tableStatus{}, Unfinished: []unfinishedEpoch{}}
	if !m.committedAt.IsZero() {
		t := m.committedAt
		r.LastCommitTime = &t
	}
	if m.lagSet {
		lag := m.lag
		r.BinlogLagSeconds = &lag
	}
	if !m.visibleAt.IsZero() {
		f := time.Since(m.visibleAt).Seconds()
		r.FreshnessSeconds = &f
	}
	led, slotCfg := m.led, m.slotCfg
	m.mu.Unlock()
	if down := m.unreachable(); len(down) > 0 {
		r.Unreachable = down
	}
	r.Slot = slotStatusOf(slotCfg)
	if src != nil {
		if d, ok := src.(interface{ Departed() []merge.Departed }); ok {
			r.Departed = d.Departed() // sources that track shard lifecycle (MySQL)
		}
		r.Flavor = src.Flavor()
		for _, t := range src.Progress().Tables {
			r.Tables = append(r.Tables, tableStatus{Table: t.Table.String(), Target: t.Target.String(), Rows: t.Rows,
				EstimatedRows: t.EstimatedRows, Chunks: t.Chunks, Done: t.Done})
		}
	}
	if led != nil {
		r.Ledger = led.Path()
		fillFromLedger(&r, led, false)
	}
	return r
}

// fillFromLedger adds the resume position, the last committed epoch and
// the unfinished epochs. stopped: the job is not running, so unfinished
// epochs are left for recovery (and described as such).
func fillFromLedger(r *statusReport, l *ledger.Ledger, stopped bool) {
	if tok, err := l.Resume(); err == nil {
		if len(tok) == 0 {
			r.Position = "the beginning (no epoch committed yet: the snapshot starts over)"
		} else if pos, ok := kafkaPosition(tok); ok {
			r.Position = pos
			if stopped {
				r.Phase = phaseStreaming
			}
		} else if info, err := describeToken(tok); err == nil {
			r.Position = info.Position
			if r.Flavor == "" {
				r.Flavor = info.Flavor
			}
			if stopped {
				r.Phase = phaseSnapshot
				if info.SnapshotDone {
					r.Phase = phaseStreaming
				}
				for _, t := range info.Tables {
					r.Tables = append(r.Tables, tableStatus{Table: t.Table.String(), Rows: t.Rows, Chunks: t.Chunks, Done: t.Done})
				}
			}
		} else {
			r.Position = "unreadable: " + err.Error()
		}
	}
	if next, err := l.NextEpoch(); err == nil {
		r.NextEpoch = next
	}
	if ds, err := l.Decisions(); err == nil {
		r.Decisions = ds
	}
	if eps, err := l.Epochs(); err == nil {
		for _, e := range eps {
			for _, d := range e.Deletes {
				r.ShardDeletes = append(r.ShardDeletes, shardDeleteInfo{Epoch: e.Number, State: e.State.String(), Shard: d.Shard.String(), Target: d.Target.String(), Cause: d.Cause})
			}
			if e.State == ledger.StateCommitted && e.Number >= r.LastCommittedEpoch {
				r.LastCommittedEpoch = e.Number
				t := e.Updated
				r.LastCommitTime = &t
			}
		}
	}
	if !stopped {
		if un, err := l.Unfinished(); err == nil {
			for _, e := range un {
				r.Unfinished = append(r.Unfinished, unfinishedEpoch{Epoch: e.Number, State: e.State.String(), Explain: "in flight"})
			}
		}
		return
	}
	p, err := twopc.Plan(l)
	if err != nil {
		r.Error = err.Error()
		return
	}
	for _, it := range p.Items {
		u := unfinishedEpoch{Epoch: it.Epoch, State: it.State.String(), Action: string(it.Action), Explain: it.Explain}
		for _, t := range it.Txns {
			u.Labels = append(u.Labels, t.Label)
		}
		r.Unfinished = append(r.Unfinished, u)
		if it.State == ledger.StatePrecommitted {
			// Decided but not known to be committed: the next start (or
			// `txn resolve`) commits it, or stops for the operator.
			r.InDoubt = true
		}
	}
}

// stoppedStatus reads a stopped job's ledger.
func stoppedStatus(path string) (statusReport, error) {
	r := statusReport{State: "stopped", Phase: phaseSnapshot, From: "ledger " + path, Ledger: path, Tables: []tableStatus{}, Unfinished: []unfinishedEpoch{}}
	if _, err := os.Stat(path); err != nil {
		return r, usagef("ledger %s: %v (a job that never ran has no ledger)", path, err)
	}
	l, err := ledger.Open(path, ledger.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, ledger.ErrLocked) {
			return r, fmt.Errorf("%w; the job is running: ask it with --http-addr (its --http-addr / pipeline.http-addr)", err)
		}
		return r, err
	}
	defer l.Close()
	fillFromLedger(&r, l, true)
	return r, nil
}

// runningStatus asks a running job's /status endpoint.
func runningStatus(ctx context.Context, addr string) (statusReport, error) {
	var r statusReport
	u := addr
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/status", nil)
	if err != nil {
		return r, usagef("--http-addr %q: %v", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
			return r, fmt.Errorf("no job answers on %s: %w (is it running with --http-addr %s? for a stopped job use --ledger)", addr, err, addr)
		}
		return r, fmt.Errorf("asking %s for its status: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return r, fmt.Errorf("asking %s for its status: %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("reading the status from %s: %w", addr, err)
	}
	r.From = "http://" + strings.TrimPrefix(u, "http://")
	return r, nil
}

func newStatusCommand() *cobra.Command {
	var httpAddr, ledgerPath, file string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a job's phase, snapshot progress, last committed epoch, position, lag and anything in doubt",
		Long: `Shows a running job (asked through its --http-addr) or a stopped one (read
from its ledger): the phase (snapshot or streaming), per-table snapshot
progress, the last committed epoch and the position reading resumes at, the
binlog lag and freshness, and unfinished or in-doubt epochs.

With -f the job's http-addr and ledger are taken from its pipeline file: the
running job is asked first, and its ledger is read when nothing answers.`,
		Example: `  shardsync status --http-addr 127.0.0.1:9464
  shardsync status --ledger shardsync_1a2b3c4d5e.ledger --json
  shardsync status -f pipeline.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file != "" {
				o, _, err := loadPipelineFile(file, osLookupEnv, nil)
				if err != nil {
					return err
				}
				if httpAddr == "" {
					httpAddr = o.httpAddr
				}
				if ledgerPath == "" {
					ledgerPath = o.ledgerPath
					if ledgerPath == "" {
						p := o.labelPrefix
						if p == "" {
							p = defaultPrefix(o)
						}
						ledgerPath = p + ".ledger"
					}
				}
			}
			if httpAddr == "" && ledgerPath == "" {
				return usagef("give --http-addr (a running job), --ledger (a stopped one) or -f pipeline.yaml")
			}
			var r statusReport
			var err error
			if httpAddr != "" {
				r, err = runningStatus(cmd.Context(), httpAddr)
				if err != nil && ledgerPath != "" {
					r, err = stoppedStatus(ledgerPath)
				}
			} else {
				r, err = stoppedStatus(ledgerPath)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			return printStatus(cmd.OutOrStdout(), r)
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http-addr", "", "the running job's --http-addr")
	f.StringVar(&ledgerPath, "ledger", "", "the stopped job's ledger file")
	f.StringVarP(&file, "file", "f", "", "the job's pipeline file (for its http-addr and ledger)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printStatus renders a status report for people.
func printStatus(w io.Writer, r statusReport) error {
	name := r.Job
	if name == "" {
		name = "job"
	}
	fmt.Fprintf(w, "%s: %s, phase %s (from %s)\n", name, r.State, r.Phase, r.From)
	if r.Ledger != "" {
		fmt.Fprintf(w, "ledger:          %s\n", r.Ledger)
	}
	if r.Uptime != "" {
		fmt.Fprintf(w, "uptime:          %s\n", r.Uptime)
	}
	last := "none yet"
	if r.LastCommittedEpoch > 0 {
		last = fmt.Sprintf("%d", r.LastCommittedEpoch)
		if r.LastCommitTime != nil {
			last += fmt.Sprintf(" at %s (%s ago)", r.LastCommitTime.Format(time.RFC3339), time.Since(*r.LastCommitTime).Round(time.Second))
		}
	}
	fmt.Fprintf(w, "last committed:  epoch %s\n", last)
	fmt.Fprintf(w, "position:        %s\n", dash(r.Position))
	if r.BinlogLagSeconds != nil {
		fmt.Fprintf(w, "binlog lag:      %.1fs\n", *r.BinlogLagSeconds)
	}
	if r.FreshnessSeconds != nil {
		fmt.Fprintf(w, "freshness:       %.1fs since the newest visible source commit\n", *r.FreshnessSeconds)
	}
	for _, d := range r.Unreachable {
		fmt.Fprintf(w, "unreachable:     %s %s since %s (%s), %d attempts; last error: %s\n", d.Component, d.Addr,
			d.Since.Format(time.RFC3339), time.Duration(d.Seconds*float64(time.Second)).Round(time.Second), d.Attempts, d.LastError)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "last error:      %s\n", r.Error)
	}
	if sl := r.Slot; sl != nil {
		if sl.Error != "" {
			fmt.Fprintf(w, "postgres slot:   %s: %s\n", sl.Name, sl.Error)
		} else {
			fmt.Fprintf(w, "postgres slot:   %s, %s WAL retained, %s behind, active=%t, wal_status=%s\n", sl.Name, bytesText(sl.RetainedWALBytes), bytesText(sl.LagBytes), sl.Active, dash(sl.WALStatus))
		}
	}
	if len(r.Tables) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tTARGET\tROWS\tEST. ROWS\tCHUNKS\tSNAPSHOT")
		for _, t := range r.Tables {
			done := "running"
			if t.Done {
				done = "done"
			}
			est := "-"
			if t.EstimatedRows > 0 {
				est = fmt.Sprint(t.EstimatedRows)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", t.Table, dash(t.Target), t.Rows, est, t.Chunks, done)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, d := range r.Departed {
		rows := "its rows stay in the target"
		if d.Deleted {
			rows = "its rows were deleted from the target"
		}
		fmt.Fprintf(w, "left its route:  %s (target %s): %s; %s\n", d.Shard, d.Target, d.Cause, rows)
	}
	for _, d := range r.ShardDeletes {
		fmt.Fprintf(w, "shard delete:    epoch %d %s: %s from %s (%s)\n", d.Epoch, d.State, d.Shard, d.Target, d.Cause)
	}
	for _, d := range r.Decisions {
		fmt.Fprintf(w, "decision:        %s the source event at %s (%s)\n", d.Action, d.Position, d.Time.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if len(r.Unfinished) == 0 {
		_, err := fmt.Fprintln(w, "nothing unfinished or in doubt")
		return err
	}
	for _, u := range r.Unfinished {
		fmt.Fprintf(w, "epoch %d %s", u.Epoch, u.State)
		if u.Action != "" {
			fmt.Fprintf(w, " → %s", u.Action)
		}
		fmt.Fprintf(w, ": %s\n", u.Explain)
	}
	if r.InDoubt {
		fmt.Fprintln(w, "a pre-committed epoch is not known to be committed yet: the next start commits it; see `shardsync txn list --ledger "+r.Ledger+"` and docs/exactly-once.md")
	}
	return nil
}
