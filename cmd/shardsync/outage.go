package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardsync/shardsync/merge"
	"github.com/shardsync/shardsync/twopc"
)

// Outages.
//
// A job runs for months; its source and sinks go away for minutes at a
// time (maintenance, failovers, a BE restart). An error that says a
// component could not be reached is an outage: the job waits it out,
// retrying with capped exponential backoff for as long as it lasts (unless
// --max-outage bounds it), like Flink's restart strategy with
// checkpointing. Every attempt starts from recovery, so nothing is lost or
// applied twice however long it takes. Errors a retry cannot fix (terminal)
// still stop the job at once; any other error restarts the job at most
// maxRestarts times in a row without progress.

// Component names: the source, or a sink's Name() ("doris", "maxcompute").
const componentSource = "source"

// componentError names the part of the job an error came from. The
// monitor's source and sink wrappers add it; Unwrap keeps the chain.
type componentError struct {
	component string
	err       error
}

func (e *componentError) Error() string { return e.err.Error() }
func (e *componentError) Unwrap() error { return e.err }

// fromComponent tags err with the component it came from, unless it
// already is tagged.
func fromComponent(component string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*componentError](err); ok {
		return err
	}
	return &componentError{component: component, err: err}
}

// outageOf reports whether err is an outage, and of which component: a
// source or sink that could not be reached (refused, reset, timed out, DNS)
// or said it is unavailable for now (5xx, no backend alive).
func outageOf(err error) (string, bool) {
	if err == nil || terminal(err) {
		return "", false
	}
	ce, ok := errors.AsType[*componentError](err)
	if !ok || !unreachable(ce.err) {
		return "", false
	}
	return ce.component, true
}

// MySQL error codes of a server going away (not of a refused login).
const (
	myTooManyConnections = 1040 // ER_CON_COUNT_ERROR
	myServerShutdown     = 1053 // ER_SERVER_SHUTDOWN
	myConnectionKilled   = 1927 // MariaDB ER_CONNECTION_KILLED
)

// unreachable reports errors of a component that is down or unreachable.
func unreachable(err error) bool {
	if errors.Is(err, merge.ErrAccessDenied) {
		return false // a wrong password is not an outage
	}
	if me, ok := errors.AsType[*mysql.MyError](err); ok {
		switch me.Code {
		case myTooManyConnections, myServerShutdown, myConnectionKilled:
			return true
		case 1044, 1045: // access denied
			return false
		}
	}
	if errors.Is(err, merge.ErrConnect) || errors.Is(err, twopc.ErrUnavailable) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true // refused, reset, timeouts, DNS (*net.DNSError is a net.Error)
	}
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT, io.ErrUnexpectedEOF, io.EOF,
		context.DeadlineExceeded, mysql.ErrBadConn} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// backoffStep is the wait before attempt n (1-based) of an outage:
// initial doubling up to maxWait.
func backoffStep(initial, maxWait time.Duration, n int) time.Duration {
	d := initial
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// outageLogEvery is how often a long outage is logged once its backoff
// has reached the cap (every step is logged while the wait still grows).
const outageLogEvery = 10 * time.Minute

// waitOutOutage records one failed attempt of an outage of component and
// returns how long to wait before the next attempt, or the error to stop
// with when --max-outage is exceeded. It logs once per backoff step.
func (j *job) waitOutOutage(component string, err error) (time.Duration, error) {
	o := j.mon.noteOutage(component, err)
	down := time.Since(o.since)
	addr := j.mon.addrOf(component)
	if limit := j.opts.maxOutage; limit > 0 && down >= limit {
		return 0, fmt.Errorf("%s %s unreachable for %s (since %s, %d attempts), longer than --max-outage %s: %w",
			component, addr, down.Round(time.Second), o.since.Format(time.RFC3339), o.attempts, limit, err)
	}
	wait := backoffStep(j.opts.restartInitialBackoff, j.opts.restartMaxBackoff, o.attempts)
	if limit := j.opts.maxOutage; limit > 0 {
		wait = max(min(wait, limit-down), time.Millisecond)
	}
	args := []any{"component", component, "addr", addr, "down_since", o.since.UTC().Format(time.RFC3339),
		"down_for", down.Round(time.Second).String(), "attempt", o.attempts, "next_attempt_in", wait.String(), "err", err}
	switch {
	case o.attempts == 1 || wait != o.lastWait:
		j.log.Warn(component+" is unreachable; waiting it out with backoff", args...)
		o.logged = time.Now()
	case time.Since(o.logged) >= outageLogEvery:
		j.log.Warn(component+" is still unreachable; waiting it out", args...)
		o.logged = time.Now()
	default:
		j.log.Debug(component+" is still unreachable", args...)
	}
	o.lastWait = wait
	return wait, nil
}

// outage is the state of one component's outage.
type outage struct {
	since    time.Time
	attempts int
	lastErr  string
	// lastWait and logged are the loop's (one goroutine).
	lastWait time.Duration
	logged   time.Time
}

// outageStatus is one unreachable component in status.
type outageStatus struct {
	Component string    `json:"component"`
	Addr      string    `json:"addr,omitempty"`
	Since     time.Time `json:"since"`
	Seconds   float64   `json:"down_seconds"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
}

// setComponents names the job's components and their addresses (for
// status, logs and the per-component metrics).
func (m *monitor) setComponents(addrs map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.addrs = addrs
}

func (m *monitor) addrOf(component string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addrs[component]
}

// noteOutage records a failed attempt to reach component.
func (m *monitor) noteOutage(component string, err error) *outage {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.outages[component]
	if o == nil {
		o = &outage{since: time.Now()}
		m.outages[component] = o
		m.anyDown.Store(true)
	}
	o.attempts++
	o.lastErr = errText(err)
	m.lastErr = o.lastErr
	return o
}

// reachable ends component's outage, if it has one: a call to it worked.
func (m *monitor) reachable(component string) {
	if !m.anyDown.Load() {
		return
	}
	m.mu.Lock()
	o := m.outages[component]
	delete(m.outages, component)
	m.anyDown.Store(len(m.outages) > 0)
	addr := m.addrs[component]
	m.mu.Unlock()
	if o != nil {
		m.log.Info(component+" is reachable again", "component", component, "addr", addr,
			"down_for", time.Since(o.since).Round(time.Second).String(), "attempts", o.attempts)
	}
}

// unreachable lists the components in an outage, by name.
func (m *monitor) unreachable() []outageStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []outageStatus{}
	for c, o := range m.outages {
		out = append(out, outageStatus{Component: c, Addr: m.addrs[c], Since: o.since, Seconds: time.Since(o.since).Seconds(),
			Attempts: o.attempts, LastError: o.lastErr})
	}
	slices.SortFunc(out, func(a, b outageStatus) int { return strings.Compare(a.Component, b.Component) })
	return out
}

// collectOutages exports, per component, whether it is unreachable and
// since when.
func (m *monitor) collectOutages(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.addrs {
		down, since, tries := 0.0, 0.0, 0.0
		if o := m.outages[c]; o != nil {
			down, since, tries = 1, float64(o.since.UnixNano())/1e9, float64(o.attempts)
		}
		ch <- prometheus.MustNewConstMetric(descDown, prometheus.GaugeValue, down, c)
		ch <- prometheus.MustNewConstMetric(descDownSince, prometheus.GaugeValue, since, c)
		ch <- prometheus.MustNewConstMetric(descDownTries, prometheus.GaugeValue, tries, c)
	}
}
