package main

// Test harness: builds the real letterbox binary once and runs it as a
// subprocess on loopback ports, reading its log for the readiness signal.

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/server"
	"github.com/letterbox/letterbox/internal/testpg"
)

var binary string // path of the built letterbox binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "letterbox-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "letterbox")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building letterbox: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// letterbox runs a CLI command to completion and returns stdout, stderr and
// the exit code.
func letterbox(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("letterbox %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// testConfig writes a config with every implemented listener on a free
// loopback port (":0" is resolved by the server; the harness reads the
// bound addresses from the log).
func testConfig(t *testing.T, dataDir string, extra string) string {
	t.Helper()
	store := ""
	if testBackend() == config.BackendPostgres {
		store = postgresStoreConfig(testpg.NewDatabase(t), filepath.Join(dataDir, "blobs"))
	}
	return writeConfig(t, dataDir, extra, store)
}

// postgresStoreConfig is the [store] section of a postgres node.
func postgresStoreConfig(url, blobDir string) string {
	return fmt.Sprintf("\n[store]\nbackend = \"postgres\"\npostgres_url = %q\nblob_dir = %q\n", url, blobDir)
}

// writeConfig writes testConfig's config with store (a [store] section or
// "") at the end.
func writeConfig(t *testing.T, dataDir, extra, store string) string {
	t.Helper()
	cfg := fmt.Sprintf(`hostname = "mx.test.example"
data_dir = %q
domains = ["test.example"]
%s
[listen]
smtp = "127.0.0.1:0"
lmtp = "127.0.0.1:0"
pop3 = "127.0.0.1:0"
pop3s = "127.0.0.1:0"
imap = "127.0.0.1:0"
imaps = "127.0.0.1:0"
`, dataDir, extra) + store
	path := filepath.Join(t.TempDir(), "letterbox.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testBackend is the store backend the integration tests run on:
// LETTERBOX_TEST_BACKEND=postgres runs them on a fresh PostgreSQL database
// per test (on the cluster testpg.EnvURL names; .ci/run does this as a
// second pass), anything else on the embedded sqlite store.
func testBackend() string {
	if os.Getenv("LETTERBOX_TEST_BACKEND") == config.BackendPostgres {
		return config.BackendPostgres
	}
	return config.BackendSQLite
}

// sqliteOnly skips a test that inspects the embedded store's files.
func sqliteOnly(t *testing.T, why string) {
	t.Helper()
	if testBackend() != config.BackendSQLite {
		t.Skipf("sqlite backend only: %s", why)
	}
}

// openStore opens the store a config names, next to a running server, as
// the CLI does.
func openStore(t *testing.T, cfgPath string) mailstore.Store {
	t.Helper()
	cfg, err := config.LoadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// serverProc is a running `letterbox serve`.
type serverProc struct {
	cmd   *exec.Cmd
	addrs map[string]string
	done  chan struct{}

	stdoutPath string

	mu      sync.Mutex
	log     bytes.Buffer
	newLine chan struct{} // closed and replaced whenever a log line arrives
}

var listeningRE = regexp.MustCompile(`msg=listening listener=(\w+) addr=(\S+)`)

// startServer starts `letterbox serve` with args and waits until it logs
// "ready".
func startServer(t *testing.T, dir string, args ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Stdout goes to a file, not a pipe: everything the server printed
	// before its "ready" log line is then in the file when we read it.
	stdout, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, addrs: map[string]string{}, done: make(chan struct{}), stdoutPath: stdout.Name(),
		newLine: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				p.addrs[m[1]] = m[2]
			}
			close(p.newLine)
			p.newLine = make(chan struct{})
			p.mu.Unlock()
			if !signalled && strings.Contains(line, "msg=ready") {
				signalled = true
				ready <- nil
			}
		}
		if !signalled {
			ready <- fmt.Errorf("server exited before ready")
		}
		cmd.Wait()
		close(p.done)
	}()
	select {
	case err := <-ready:
		if err != nil {
			<-p.done
			t.Fatalf("%v; log:\n%s", err, p.Log())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-p.done
		t.Fatalf("server not ready after 30s; log:\n%s", p.Log())
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func (p *serverProc) Addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[name]
}

func (p *serverProc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// WaitLog waits until the server's log contains substr.
func (p *serverProc) WaitLog(t *testing.T, substr string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		p.mu.Lock()
		found := strings.Contains(p.log.String(), substr)
		ch := p.newLine
		p.mu.Unlock()
		if found {
			return
		}
		select {
		case <-ch:
		case <-p.done:
			if !strings.Contains(p.Log(), substr) {
				t.Fatalf("server exited without logging %q; log:\n%s", substr, p.Log())
			}
			return
		case <-deadline:
			t.Fatalf("server did not log %q within 30s; log:\n%s", substr, p.Log())
		}
	}
}

// Stdout returns what the server printed on standard output so far.
func (p *serverProc) Stdout() string {
	b, _ := os.ReadFile(p.stdoutPath)
	return string(b)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *serverProc) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and returns the exit code.
func (p *serverProc) Stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		t.Fatalf("server did not stop after SIGTERM; log:\n%s", p.Log())
	}
	return p.cmd.ProcessState.ExitCode()
}
