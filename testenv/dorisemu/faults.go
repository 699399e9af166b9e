package dorisemu

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Endpoint names a request kind for [Faults.FailNext].
type Endpoint string

// Endpoints that can be made to fail.
const (
	FEStreamLoad Endpoint = "fe_stream_load" // FE PUT .../_stream_load (before the 307)
	FE2PC        Endpoint = "fe_2pc"         // FE PUT .../_stream_load_2pc (before the 307)
	FELoadState  Endpoint = "fe_load_state"  // FE GET /api/{db}/get_load_state
	FEBackends   Endpoint = "fe_backends"    // FE GET /api/backends
	FESchema     Endpoint = "fe_schema"      // FE GET /api/{db}/{tbl}/_schema
	BEStreamLoad Endpoint = "be_stream_load" // BE PUT .../_stream_load (before begin: no txn)
	BE2PC        Endpoint = "be_2pc"         // BE PUT .../_stream_load_2pc (nothing applied)
)

// Faults are the emulator's fault-injection knobs. One-shot knobs (FailNext,
// ResetMidBody, Drop*Reply) arm the next matching request; the others stay
// in force until changed or Reset.
type Faults struct {
	e *Emulator

	mu             sync.Mutex
	failNext       map[Endpoint][]int
	reset          *resetFault
	continueDelay  time.Duration
	omitContinue   bool
	dropCommit     int
	dropLoad       int
	redirectDelay  time.Duration
	injectedCounts map[string]int
}

type resetFault struct {
	after   int64
	keepTxn bool
}

// FailNext makes the next request to ep answer with HTTP status (e.g. 503)
// and a short text body, doing nothing else. Calls queue up.
func (f *Faults) FailNext(ep Endpoint, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext == nil {
		f.failNext = map[Endpoint][]int{}
	}
	f.failNext[ep] = append(f.failNext[ep], status)
}

func (f *Faults) takeFail(ep Endpoint) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.failNext[ep]
	if len(q) == 0 {
		return 0
	}
	f.failNext[ep] = q[1:]
	f.count("fail:" + string(ep))
	return q[0]
}

// ResetMidBody makes the next BE stream load reset its TCP connection (RST)
// after reading afterBytes body bytes. With keepTxn false the BE rolls the
// txn back (ABORTED, label reusable) as after a cancelled load; with keepTxn
// true the txn stays PREPARE until its timeout, as when a BE dies mid-load.
func (f *Faults) ResetMidBody(afterBytes int64, keepTxn bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reset = &resetFault{after: afterBytes, keepTxn: keepTxn}
}

func (f *Faults) takeReset() *resetFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reset
	f.reset = nil
	if r != nil {
		f.count("reset_mid_body")
	}
	return r
}

// DelayContinue makes the BE wait d after the headers of a stream load
// (and after begin) before it reads the body, i.e. before Go's server sends
// `100 Continue`. 0 turns it off.
func (f *Faults) DelayContinue(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.continueDelay = d
}

// OmitContinue makes the BE read stream-load bodies without ever sending
// `100 Continue` (the client must give up waiting and send the body anyway).
func (f *Faults) OmitContinue(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.omitContinue = on
}

// DropCommitReply makes the next successful 2PC commit apply (txn becomes
// COMMITTED) and then close the connection without a reply.
func (f *Faults) DropCommitReply() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropCommit++
}

// DropLoadReply makes the next successful stream load reach PRECOMMITTED (or
// COMMITTED without 2PC) and then close the connection without a reply.
func (f *Faults) DropLoadReply() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLoad++
}

func (f *Faults) takeDrop(commit bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &f.dropLoad
	if commit {
		p = &f.dropCommit
	}
	if *p == 0 {
		return false
	}
	*p--
	f.count(fmt.Sprintf("drop_reply:commit=%v", commit))
	return true
}

// DelayRedirect makes the FE wait d before answering a stream-load or 2PC
// PUT with its 307.
func (f *Faults) DelayRedirect(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redirectDelay = d
}

func (f *Faults) settings() (continueDelay time.Duration, omit bool, redirect time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.continueDelay, f.omitContinue, f.redirectDelay
}

// BEDown closes (true) or reopens (false) the BE port. While down,
// connections to BEHTTPAddr are refused and in-flight BE requests are cut;
// the FE notices at once: /api/backends reports is_alive=false and FE PUTs
// answer "No backend load available".
func (f *Faults) BEDown(down bool) error { return f.e.setBEDown(down, true) }

// BEDownSilently is BEDown before the FE's heartbeat notices: the BE port is
// closed but the FE still lists the BE as alive and redirects to it.
func (f *Faults) BEDownSilently(down bool) error { return f.e.setBEDown(down, false) }

// SetPublishDelay changes how long later commits stay COMMITTED before
// turning VISIBLE (slow publish).
func (f *Faults) SetPublishDelay(d time.Duration) {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	f.e.publishDelay = d
}

// HoldPublish stops (true) or resumes (false) publishing: committed txns
// stay COMMITTED while held.
func (f *Faults) HoldPublish(on bool) {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	f.e.holdPublish = on
	if !on {
		f.e.tickLocked()
	}
}

// Injected reports how many times each armed fault fired, keyed by
// "fail:<endpoint>", "reset_mid_body", "drop_reply:commit=true|false".
func (f *Faults) Injected() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.injectedCounts))
	for k, v := range f.injectedCounts {
		out[k] = v
	}
	return out
}

func (f *Faults) count(k string) {
	if f.injectedCounts == nil {
		f.injectedCounts = map[string]int{}
	}
	f.injectedCounts[k]++
}

// Reset disarms every knob, brings the BE back up and restores the
// configured publish delay.
func (f *Faults) Reset() error {
	f.mu.Lock()
	f.failNext, f.reset, f.continueDelay, f.omitContinue = nil, nil, 0, false
	f.dropCommit, f.dropLoad, f.redirectDelay = 0, 0, 0
	f.mu.Unlock()
	f.e.mu.Lock()
	f.e.publishDelay = f.e.opts.PublishDelay
	f.e.holdPublish = false
	f.e.mu.Unlock()
	return f.e.setBEDown(false, true)
}

func (e *Emulator) setBEDown(down, noticed bool) error {
	e.beMu.Lock()
	defer e.beMu.Unlock()
	select {
	case <-e.stop:
		return fmt.Errorf("emulator is closed")
	default:
	}
	if down {
		e.beDownNoticed = noticed
		if e.beDown {
			return nil
		}
		e.beDown = true
		err := e.beSrv.Close() // closes the listener and cuts active connections
		e.beSrv = nil
		if err != nil {
			return fmt.Errorf("stopping BE port %s: %w", e.beAddr, err)
		}
		e.log.Info("BE down", "addr", e.beAddr, "fe_noticed", noticed)
		return nil
	}
	e.beDownNoticed = false
	if !e.beDown {
		return nil
	}
	ln, err := net.Listen("tcp", e.beAddr)
	if err != nil {
		return fmt.Errorf("reopening BE port %s: %w", e.beAddr, err)
	}
	e.beDown = false
	e.beLn = ln
	e.beSrv = e.newBEServer()
	e.serveHTTP(e.beSrv, ln)
	e.log.Info("BE up", "addr", e.beAddr)
	return nil
}

func (e *Emulator) beAlive() bool {
	e.beMu.Lock()
	defer e.beMu.Unlock()
	return !e.beDown || !e.beDownNoticed
}
