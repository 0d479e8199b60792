package audit

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

const helperEnv = "LETTERBOX_AUDIT_HELPER"

// TestAppendHelperProcess is not a test: TestTwoProcesses runs the test
// binary again with this test selected and helperEnv set to
// "DIR TAG COUNT"; it appends COUNT records once stdin delivers a byte.
func TestAppendHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process of TestTwoProcesses")
	}
	f := strings.Fields(spec)
	n, _ := strconv.Atoi(f[2])
	l := openT(t, f[0], Options{MaxFileSize: 4096})
	if _, err := io.ReadFull(os.Stdin, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, n, f[1])
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTwoProcesses: two other processes and this one append to one
// directory at the same time, across rotations; the flock keeps one chain.
func TestTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	const each = 150
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   strings.Builder
	}
	var children []*child
	for i := range 2 {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestAppendHelperProcess$", "-test.count=1")}
		c.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s g%d %d", helperEnv, dir, i, each))
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, c)
	}
	l := openT(t, dir, Options{MaxFileSize: 4096})
	for _, c := range children {
		c.stdin.Write([]byte{1})
		c.stdin.Close()
	}
	appendN(t, l, each, "g2")
	for _, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("helper process: %v\n%s", err, c.out.String())
		}
	}
	rep := intact(t, dir)
	if rep.Records != 3*each || len(rep.Files) < 5 {
		t.Fatalf("%d records in %d files", rep.Records, len(rep.Files))
	}
	checkAllPresent(t, dir, 3, each, "g")
}
