package pluginhost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/celluster/celluster/pluginapi/v1"
)

// testPlugins are the main programs under testdata/plugins.
var testPlugins = []string{"ticker", "crashy", "firehose", "parser", "verber", "badcookie", "badversion", "hang", "multi", "forker"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv("PLUGINHOST_TEST_NODE") != "" {
		runTestNode()
		return
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds the test plugins once per test binary and returns their dir.
func bins(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pluginhost-plugins-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + string(os.PathSeparator)}
		for _, n := range testPlugins {
			args = append(args, "./testdata/plugins/"+n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		tb.Fatalf("building test plugins: %v", buildErr)
	}
	return binDir
}

// install copies the test plugin src into dir as name (mode 0755).
func install(tb testing.TB, dir, src, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(bins(tb), src))
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name)
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
	return path
}

// logBuf collects the manager's log as JSON lines; it is printed if the
// test fails.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) records() []map[string]any {
	l.mu.Lock()
	data := bytes.Clone(l.buf.Bytes())
	l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(data) {
		var r map[string]any
		if json.Unmarshal(line, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// has reports whether some record has all of kv (values compared as strings,
// "msg" by substring).
func (l *logBuf) has(kv map[string]string) bool {
	for _, r := range l.records() {
		ok := true
		for k, v := range kv {
			got := fmt.Sprint(r[k])
			if k == "msg" {
				ok = ok && strings.Contains(got, v)
			} else {
				ok = ok && got == v
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func testLogger(tb testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	tb.Cleanup(func() {
		if tb.Failed() {
			lb.mu.Lock()
			tb.Logf("manager log:\n%s", lb.buf.String())
			lb.mu.Unlock()
		}
	})
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// startManager starts a Manager with test-friendly defaults; it is closed
// when the test ends.
func startManager(tb testing.TB, cfg Config, tweak ...func(*Manager)) (*Manager, *logBuf) {
	tb.Helper()
	var lb *logBuf
	if cfg.Logger == nil {
		cfg.Logger, lb = testLogger(tb)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second // a loaded machine
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 200 * time.Millisecond
	}
	if cfg.Backoff.Min == 0 {
		cfg.Backoff = Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	}
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	m := New(cfg)
	for _, f := range tweak {
		f(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() {
		cancel()
		m.Close()
	})
	if err := m.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return m, lb
}

func statusOf(tb testing.TB, m *Manager, name string) Status {
	tb.Helper()
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	tb.Fatalf("no plugin %s in %+v", name, m.Status())
	return Status{}
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitRunning(tb testing.TB, m *Manager, name string) Status {
	tb.Helper()
	waitFor(tb, 30*time.Second, name+" running", func() bool {
		for _, s := range m.Status() {
			if s.Name == name && s.State == StateRunning {
				return true
			}
		}
		return false
	})
	return statusOf(tb, m, name)
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st != 'Z' && st != 'X'
}

// markers lists the marker files test plugins leave in dir, by mode.
func markers(tb testing.TB, dir, mode string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), "."+mode+".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// recordingHost is a real HostService: the core-side boundary.
type recordingHost struct {
	pb.UnimplementedHostServer
	mu    sync.Mutex
	calls []string
	notes chan *pb.AddJournalNoteRequest
}

func newRecordingHost() *recordingHost {
	return &recordingHost{notes: make(chan *pb.AddJournalNoteRequest, 100)}
}

func (h *recordingHost) record(c string) {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
}

func (h *recordingHost) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *recordingHost) ListCells(context.Context, *pb.ListCellsRequest) (*pb.ListCellsResponse, error) {
	h.record("ListCells")
	return &pb.ListCellsResponse{Cells: []*pb.CellState{{Name: "hello", State: "serving", Replicas: 1}, {Name: "auth", State: "serving", Replicas: 2}}}, nil
}

func (h *recordingHost) AddJournalNote(_ context.Context, r *pb.AddJournalNoteRequest) (*pb.AddJournalNoteResponse, error) {
	h.record("AddJournalNote " + r.GetCell() + ": " + r.GetNote())
	select {
	case h.notes <- r:
	default:
	}
	return &pb.AddJournalNoteResponse{}, nil
}

// runTestNode is the test binary re-executed as a node: it starts a Manager
// on $PLUGINHOST_TEST_DIR, prints "PIDS <pid>..." and waits to be killed.
func runTestNode() {
	m := New(Config{
		Dir:          os.Getenv("PLUGINHOST_TEST_DIR"),
		Owner:        os.Getenv("PLUGINHOST_TEST_OWNER"),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		StartTimeout: 30 * time.Second,
	})
	if err := m.Start(context.Background()); err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	var pids []string
	for _, s := range m.Status() {
		if s.PID == 0 {
			fmt.Println("ERR", s.Name, s.State, s.LastError)
			os.Exit(1)
		}
		pids = append(pids, strconv.Itoa(s.PID))
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "PIDS", strings.Join(pids, " "))
	w.Flush()
	select {}
}

// children returns the pids of the children forker plugins left markers
// for in dir, in mode (serve or describe).
func children(tb testing.TB, dir, mode string) []int {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "child."+mode+"."); ok {
			pid, err := strconv.Atoi(s)
			if err != nil {
				tb.Fatalf("marker %s", e.Name())
			}
			out = append(out, pid)
		}
	}
	return out
}

// killAtEnd SIGKILLs pids when the test ends, whatever it asserted.
func killAtEnd(tb testing.TB, pids ...int) {
	tb.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}
