package schema

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The sandbox. CUE has no limit of its own on time or memory: a 280-byte
// .cue file that doubles a string 22 times allocates 141 MiB, and each line
// more doubles that. Go cannot stop a goroutine nor bound its allocations,
// so .cue manifests are evaluated in a child process: the current
// executable run again, which MaybeRunSandbox turns into the evaluator. The
// child gets a heap watchdog, a Go memory limit and an address-space limit
// (RLIMIT_AS) for CUEMemory, and a deadline for CUETime; it sends back the
// valid objects as JSON and the problems, located as in process. A child
// that crosses a limit is refused with a Problem naming the limit, at the
// file (and document) it was evaluating. The parent never holds more than
// the results.
//
// Protocol (version sandboxProto): the parent writes one JSON
// sandboxRequest on the child's stdin and closes it; the child writes JSON
// sandboxMsg values on stdout: a hello, then "at" progress marks and one
// result per file, then done. Anything else is a failed sandbox.

// sandboxEnv, set to sandboxProto in the child's environment, makes
// MaybeRunSandbox run the evaluator.
const (
	sandboxEnv   = "FLOTILLA_SCHEMA_SANDBOX"
	sandboxProto = "flotilla-cue-sandbox/1"
)

// sandboxExit is the child's exit code when it stopped itself at a limit.
const sandboxExit = 3

// sandboxHooked is set when this process's main called MaybeRunSandbox, so
// that running the executable again reaches the sandbox (and not, say, a
// test binary's tests).
var sandboxHooked atomic.Bool

// MaybeRunSandbox must be the first call of main (and of TestMain in test
// binaries of packages that Load .cue manifests). In a process started as
// the CUE sandbox it evaluates the request on stdin and exits; otherwise it
// records that this executable can serve as the sandbox and returns at once.
// Without it, Load refuses .cue manifests (with a Problem that says so)
// rather than evaluate them without limits.
func MaybeRunSandbox() {
	if os.Getenv(sandboxEnv) != sandboxProto {
		sandboxHooked.Store(true)
		return
	}
	os.Exit(runSandbox(os.Stdin, os.Stdout))
}

// sandboxRequest is what the parent sends.
type sandboxRequest struct {
	Proto  string    `json:"proto"`
	Limits Limits    `json:"limits"`
	Budget int       `json:"budget"` // objects that may be produced
	Files  []cueFile `json:"files"`
}

// sandboxMsg is one message of the child; exactly one field is set.
type sandboxMsg struct {
	Hello  string     `json:"hello,omitempty"`  // sandboxProto
	At     *sandboxAt `json:"at,omitempty"`     // about to evaluate this place
	Result *cueResult `json:"result,omitempty"` // one file done
	Limit  string     `json:"limit,omitempty"`  // stopped at this limit (LimitCUEMemory, LimitCUETime)
	Error  string     `json:"error,omitempty"`  // could not do its work
	Done   bool       `json:"done,omitempty"`
}

type sandboxAt struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

// maxSandboxRequest bounds what the child reads from its parent.
const maxSandboxRequest = 1 << 30

// runSandbox is the child: it reads the request, evaluates under the
// limits and writes the messages. It returns the exit code.
func runSandbox(in io.Reader, out io.Writer) int {
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m sandboxMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	send(sandboxMsg{Hello: sandboxProto})
	req, err := decodeSandboxRequest(io.LimitReader(in, maxSandboxRequest))
	if err != nil {
		send(sandboxMsg{Error: err.Error()})
		return 1
	}
	lim := req.Limits.withDefaults()
	stop := func(limit string) {
		mu.Lock() // hold it: nothing more may be written
		_ = enc.Encode(sandboxMsg{Limit: limit})
		os.Exit(sandboxExit)
	}
	limitMemory(lim.CUEMemory, func() { stop(LimitCUEMemory) })

	v, err := NewValidatorWithLimits(lim)
	if err != nil {
		send(sandboxMsg{Error: err.Error()})
		return 1
	}
	// The manifests' time starts now: loading Flotilla's own schema (seconds
	// on a loaded machine) is not theirs.
	time.AfterFunc(lim.CUETime, func() { stop(LimitCUETime) })
	err = v.evalCUEFiles(req.Files, req.Budget,
		func(file string, line int) { send(sandboxMsg{At: &sandboxAt{File: file, Line: line}}) },
		func(r cueResult) { send(sandboxMsg{Result: &r}) })
	if err != nil {
		send(sandboxMsg{Error: err.Error()})
		return 1
	}
	send(sandboxMsg{Done: true})
	return 0
}

// decodeSandboxRequest reads the parent's request.
func decodeSandboxRequest(r io.Reader) (sandboxRequest, error) {
	var req sandboxRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("read the sandbox request: %w", err)
	}
	if req.Proto != sandboxProto {
		return req, fmt.Errorf("sandbox request of protocol %q, want %q", req.Proto, sandboxProto)
	}
	return req, nil
}

// limitMemory bounds the child's memory at limit: a Go memory limit (the
// GC works harder near it), a watchdog that stops the process once the
// heap is above it, and an address-space limit (for one allocation larger
// than the rest) of what is mapped now plus twice the limit.
func limitMemory(limit int64, stop func()) {
	debug.SetMemoryLimit(limit)
	if mapped := vmSize(); mapped > 0 {
		as := uint64(mapped) + 2*uint64(limit)
		_ = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: as, Max: as})
	}
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for range time.Tick(2 * time.Millisecond) {
			metrics.Read(s)
			if s[0].Value.Kind() == metrics.KindUint64 && s[0].Value.Uint64() > uint64(limit) {
				stop()
			}
		}
	}()
}

// vmSize is this process's mapped address space (VmSize), 0 if unknown.
func vmSize() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// sandboxOutcome is what the parent read from the child.
type sandboxOutcome struct {
	results []cueResult
	at      sandboxAt // the last place the child announced
	limit   string    // the limit the child stopped at
	err     string    // the child's own error
	done    bool
	tooMuch bool // the output exceeded its bound
}

// readSandbox reads the child's messages, at most max bytes of them.
func readSandbox(r io.Reader, max int64) sandboxOutcome {
	var o sandboxOutcome
	lr := &io.LimitedReader{R: r, N: max + 1}
	dec := json.NewDecoder(lr)
	hello := false
	for {
		var m sandboxMsg
		if err := dec.Decode(&m); err != nil {
			if lr.N <= 0 {
				o.tooMuch = true
			} else if !errors.Is(err, io.EOF) && o.err == "" && !o.done && o.limit == "" {
				o.err = fmt.Sprintf("unreadable answer: %v", err)
			}
			return o
		}
		switch {
		case !hello:
			if m.Hello != sandboxProto {
				o.err = fmt.Sprintf("the sandbox did not answer with protocol %q", sandboxProto)
				return o
			}
			hello = true
		case m.At != nil:
			o.at = *m.At
		case m.Result != nil:
			o.results = append(o.results, *m.Result)
		case m.Limit != "":
			o.limit = m.Limit
			return o
		case m.Error != "":
			o.err = m.Error
			return o
		case m.Done:
			o.done = true
			return o
		}
	}
}

// evalInSandbox evaluates .cue files in a child process under the
// Validator's limits.
func (v *Validator) evalInSandbox(files []cueFile) ([]cueResult, Problems) {
	lim := v.limits
	fail := func(reason string) Problems {
		return Problems{{File: files[0].Name, Reason: reason}}
	}
	if !sandboxHooked.Load() {
		return nil, fail("cannot evaluate .cue manifests: this program does not run Flotilla's CUE sandbox (its main must call schema.MaybeRunSandbox first); use YAML or JSON, or the flotilla binary")
	}
	// /proc/self/exe is this very program even when its file has been
	// replaced or removed since it started (an upgrade).
	exe := "/proc/self/exe"
	_, err := os.Stat(exe)
	if err != nil {
		exe, err = os.Executable()
	}
	if err != nil {
		return nil, fail(fmt.Sprintf("cannot evaluate .cue manifests: find this executable for the CUE sandbox: %v", err))
	}
	req, err := json.Marshal(sandboxRequest{Proto: sandboxProto, Limits: lim, Budget: lim.MaxObjects, Files: files})
	if err != nil {
		return nil, fail(fmt.Sprintf("internal error: encode the sandbox request: %v", err))
	}
	// The child stops itself at CUETime; the deadline here is the backstop.
	ctx, cancel := context.WithTimeout(context.Background(), lim.CUETime+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), sandboxEnv+"="+sandboxProto)
	cmd.Stdin = bytes.NewReader(req)
	var stderr headTail
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fail(fmt.Sprintf("internal error: start the CUE sandbox: %v", err))
	}
	if err := cmd.Start(); err != nil {
		return nil, fail(fmt.Sprintf("internal error: start the CUE sandbox: %v", err))
	}
	o := readSandbox(stdout, lim.MaxCommitBytes+(1<<20))
	killed := false
	if !o.done && o.limit == "" && (o.err != "" || o.tooMuch) {
		_ = cmd.Process.Kill() // it broke the protocol: nothing more to read
		killed = true
	}
	werr := cmd.Wait()
	if killed || ctx.Err() != nil {
		werr = nil // a kill of ours says nothing about the child's memory
	}
	return o.results, v.sandboxProblems(files, o, ctx.Err(), werr, stderr.String())
}

// sandboxProblems says why a sandbox run did not finish, if it did not.
func (v *Validator) sandboxProblems(files []cueFile, o sandboxOutcome, ctxErr, waitErr error, stderr string) Problems {
	if o.done {
		return nil
	}
	lim := v.limits
	file, line := o.at.File, o.at.Line
	if file == "" {
		file = files[0].Name
	}
	where, col := "evaluating this CUE file", 1 // its compilation evaluates it whole
	if line > 1 {
		where = "validating this object"
	}
	if line == 0 {
		col = 0
	}
	switch {
	case o.limit == LimitCUETime || errors.Is(ctxErr, context.DeadlineExceeded):
		return Problems{limitProblem(file, line, col, LimitCUETime,
			fmt.Sprintf("%s takes longer than %s", where, lim.CUETime), lim.CUETime)}
	case o.limit == LimitCUEMemory || outOfMemory(stderr, waitErr):
		return Problems{limitProblem(file, line, col, LimitCUEMemory,
			fmt.Sprintf("%s needs more than %s of memory", where, formatBytes(lim.CUEMemory)), lim.CUEMemory)}
	case o.tooMuch:
		return Problems{limitProblem(file, line, col, LimitCommitBytes,
			fmt.Sprintf("the objects of the .cue manifests are larger than %s of JSON in all", formatBytes(lim.MaxCommitBytes)), lim.MaxCommitBytes)}
	}
	reason := o.err
	if reason == "" {
		reason = fmt.Sprintf("it stopped without an answer (%v)", waitErr)
	}
	if s := strings.TrimSpace(stderr); s != "" {
		reason += ": " + firstLines(s, 3)
	}
	return Problems{{File: file, Line: line, Reason: "internal error: the CUE sandbox failed: " + reason}}
}

// outOfMemory says whether the child died of its address-space limit (the
// Go runtime's fatal error) or was killed as the kernel does when memory
// runs out.
func outOfMemory(stderr string, waitErr error) bool {
	// The last two are how a -race build reports its address-space limit
	// (ThreadSanitizer's shadow mappings fail with ENOMEM).
	if strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") ||
		strings.Contains(stderr, "too many address space collisions") ||
		strings.Contains(stderr, "ThreadSanitizer failed to allocate") && strings.Contains(stderr, "errno: 12") {
		return true
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

// headTail keeps the first and the last 8 KiB written to it: a Go
// runtime's fatal error comes first, then goroutine dumps.
type headTail struct {
	mu         sync.Mutex
	head, tail []byte
}

const headTailSize = 8 << 10

func (t *headTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if room := headTailSize - len(t.head); room > 0 {
		k := min(room, len(p))
		t.head = append(t.head, p[:k]...)
		p = p[k:]
	}
	t.tail = append(t.tail, p...)
	if over := len(t.tail) - headTailSize; over > 0 {
		t.tail = append(t.tail[:0], t.tail[over:]...)
	}
	return n, nil
}

func (t *headTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.head) + string(t.tail)
}
