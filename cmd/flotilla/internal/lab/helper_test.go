package lab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the lab's server and agents: with
// LAB_HELPER set, TestMain runs a helper mode instead of the tests.
const (
	helperEnv  = "LAB_HELPER"
	serverPort = "7001"
	agentPort  = "7000"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "server": // args: addr
		return echoServer(args[0], nil)
	case "agent": // args: nodeIP serverIP dataDir
		ln, err := net.Listen("tcp", net.JoinHostPort(args[0], agentPort))
		if err != nil {
			fmt.Println("agent listen:", err)
			return 1
		}
		go echoServer("", ln)
		if err := ping(net.JoinHostPort(args[1], serverPort), 5*time.Second); err != nil {
			fmt.Println("agent reaching the server:", err)
			return 1
		}
		fmt.Println("agent connected to the server")
		// Like the agent starting a Podman that starts a conmon: a
		// short-lived parent whose detached child holds a "container".
		self, _ := os.Executable()
		c := exec.Command(self)
		c.Env = append(os.Environ(), helperEnv+"=daemonize")
		c.Args = []string{self, args[2]}
		if err := c.Run(); err != nil {
			fmt.Println("agent daemonize:", err)
			return 1
		}
		select {}
	case "daemonize": // args: dataDir. Starts a conmon in a new session, exits.
		self, _ := os.Executable()
		c := exec.Command(self, args[0])
		c.Env = append(os.Environ(), helperEnv+"=conmon")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			fmt.Println("daemonize:", err)
			return 1
		}
		return 0
	case "conmon": // args: dataDir. A child in a network namespace of its own.
		c := exec.Command("unshare", "--net", "--", "sleep", "1000")
		if err := c.Start(); err != nil {
			fmt.Println("conmon:", err)
			return 1
		}
		pids := fmt.Sprintf("%d %d\n", os.Getpid(), c.Process.Pid)
		os.WriteFile(filepath.Join(args[0], "pids"), []byte(pids), 0o644)
		c.Wait()
		return 0
	case "dial": // args: addr...
		for _, a := range args {
			if err := ping(a, 3*time.Second); err != nil {
				fmt.Println(err)
				return 1
			}
		}
		return 0
	case "sleep":
		select {}
	}
	fmt.Println("unknown helper mode", mode)
	return 2
}

// echoServer answers every line with the same line, logging who called.
func echoServer(addr string, ln net.Listener) int {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			fmt.Println("server listen:", err)
			return 1
		}
	}
	fmt.Println("listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		fmt.Println("connection from", c.RemoteAddr())
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// ping connects to addr (retrying until timeout) and checks an echo.
func ping(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := pingOnce(addr)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pingOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return fmt.Errorf("writing to %s: %w", addr, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ping" {
		return fmt.Errorf("echo from %s: %q, %v", addr, line, err)
	}
	return nil
}
