package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkLogs is issue 12's logs through kubectl on `up`: --previous shows
// the run before a restart (and a container that never restarted has
// none: Kubernetes' 400), the current log only the current run;
// --since=1s on an idle pod prints nothing; --timestamps and
// --limit-bytes do what kubectl says.
func checkLogs(t *testing.T, c *upCluster, kubectl func(bool, ...string) string) {
	const pods = `apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  restartPolicy: Always
  volumes: [{name: count, emptyDir: {}}]
  containers:
  - name: c
    image: localhost/busybox:latest
    command: [sh, -c, "n=$(cat /count/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /count/n; echo run-$n; sleep 2; exit 1"]
    volumeMounts: [{name: count, mountPath: /count}]
---
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  containers:
  - {name: c, image: localhost/busybox:latest, command: [sh, -c, "echo hello-once; exec sleep 3600"]}
`
	commit := c.commitFiles("pods for logs", "logs", map[string]string{"pods.yaml": pods})
	c.waitAttempt(commit, time.Minute)
	c.eventually("chatty runs", 2*time.Minute, func() error {
		if out := kubectl(false, "get", "pod", "chatty", "-o", "jsonpath={.status.phase}"); out != "Running" {
			return fmt.Errorf("chatty is %q", out)
		}
		return nil
	})
	if out := kubectl(true, "logs", "chatty", "--previous"); !strings.Contains(out, `previous terminated container "c" in pod "chatty" not found`) {
		t.Errorf("logs --previous of a container that never restarted:\n%s", out)
	}
	if out := kubectl(false, "logs", "chatty", "--timestamps"); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) hello-once`).MatchString(out) {
		t.Errorf("logs --timestamps:\n%q", out)
	}
	if out := kubectl(false, "logs", "chatty", "--limit-bytes", "5"); out != "hello" {
		t.Errorf("logs --limit-bytes 5: %q", out)
	}
	c.eventually("chatty's only line is older than a second", 30*time.Second, func() error {
		if out := kubectl(false, "logs", "chatty", "--since", "1s"); out != "" {
			return fmt.Errorf("logs --since=1s printed %q", out)
		}
		return nil
	})

	runs := regexp.MustCompile(`run-\d+`)
	c.eventually("crashy restarted and runs again", 2*time.Minute, func() error {
		out := kubectl(false, "get", "pod", "crashy", "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}")
		if f := strings.Fields(out); len(f) != 2 || f[0] == "0" {
			return fmt.Errorf("crashy: restarts and running since: %q", out)
		}
		prev := runs.FindAllString(kubectl(false, "logs", "crashy", "--previous"), -1)
		cur := runs.FindAllString(kubectl(false, "logs", "crashy"), -1)
		if len(prev) != 1 || len(cur) != 1 || prev[0] == cur[0] {
			return fmt.Errorf("previous run's lines %q, current run's %q: want one each, different", prev, cur)
		}
		return nil
	})
	c.commitFiles("drop the log pods", "logs", nil)
}
