package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a child process, such as the operator or the emulator, whose output
// goes to a log file.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // what Wait returned; read only after done is closed
}

// StartProcess starts the program at path with args, writing its stdout and stderr
// to logPath (truncated first).
//
// The child runs in its own process group. A Ctrl-C in a terminal signals the whole
// foreground group at once; this way only the parent gets it, and stops its
// children in order: the operator before the API server it talks to. envtest does
// the same for etcd and kube-apiserver (and, like envtest, this needs a Unix).
func StartProcess(logPath, path string, args ...string) (*Process, error) {
	return StartProcessWithEnv(logPath, path, nil, args...)
}

// StartProcessWithEnv is StartProcess with env ("NAME=value") added to this
// process's environment, replacing variables of the same name, as a pod's env
// replaces the image's.
func StartProcessWithEnv(logPath, path string, env []string, args ...string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	// The child gets its own copy of the descriptor.
	defer func() { _ = log.Close() }()

	cmd := exec.Command(path, args...)
	if len(env) > 0 {
		// Of duplicate names, exec keeps the last.
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{name: filepath.Base(path), cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} {
	return p.done
}

// Err describes how the process exited; it is nil while it runs or after a clean exit.
func (p *Process) Err() error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s exited: %w", p.name, p.err)
		}
		return nil
	default:
		return nil
	}
}

// Stop sends SIGTERM, which the operator and the emulator handle by shutting down
// cleanly, and kills the process if it has not exited after grace. It returns nil
// only if the process exited with status 0.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.Err()
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return p.Err()
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.name, grace)
	}
}

// Kill sends SIGKILL, as the kernel's OOM killer or a node failure would: the process
// gets no chance to finish requests, release its leader election Lease or flush
// anything. It returns once the process has exited.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return nil
}
