#!/usr/bin/env bash
# The performance report of `make bench`: the machine, the commands, and the
# figures against the targets of the issues. Needs root and Podman for the
# end-to-end parts (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "Flotilla performance report — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(uname -srm); $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); $(free -g | awk '/Mem:/{print $2}') GiB"
echo "go: $(go version | cut -d' ' -f3); podman: $(podman --version | cut -d' ' -f3); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo

sched=(go test -run '^$' -bench 'BenchmarkSchedule10kPods1kNodes' -benchtime 20x -count 3 ./reconciler/scheduler/)
schedstore=(go test -run '^$' -bench 'BenchmarkScheduleThroughStore/pods=10000' -benchtime 3x ./reconciler/scheduler/)
e2e=(go test -count=1 -run '^$' -bench 'BenchmarkCommitToRunning|BenchmarkPodStartVsPodmanRun|BenchmarkLabFailover|BenchmarkLabThreeServers|BenchmarkIdle100Pods|BenchmarkStreams' -benchtime 1x -v -timeout 45m ./cmd/flotilla/)
net=(go test -run '^$' -bench 'BenchmarkPodToPodThroughput' -benchtime 20x ./netfabric/)
svc=(go test -run '^$' -bench 'BenchmarkSync1000Services5000Endpoints|BenchmarkVIPvsPodIP$' -benchtime 20x ./netfabric/svcproxy/)
echo "\$ ${sched[*]}"
"${sched[@]}" | tee "$out/sched.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${schedstore[*]}"
"${schedstore[@]}" | tee "$out/schedstore.txt" | grep -E '^Benchmark' || true
commit=(go test -run '^$' -bench 'BenchmarkBigCommit/10000|BenchmarkPushToApplied' -benchtime 3x ./gitsync/)
echo "\$ ${commit[*]}"
"${commit[@]}" | tee "$out/commit.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${e2e[*]}"
"${e2e[@]}" | tee "$out/e2e.txt" | grep -E '^Benchmark|bench_test.go' || true
echo
echo "\$ ${net[*]}"
"${net[@]}" | tee "$out/net.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${svc[*]}"
"${svc[@]}" | tee "$out/svc.txt" | grep -E '^Benchmark' || true
echo
api=(go test -run '^$' -bench 'BenchmarkAPIWrite|BenchmarkAuthorization|BenchmarkSecretRead' -benchtime 1000x ./cluster/apiserver/)
bind=(go test -run '^$' -bench 'BenchmarkBindings' -benchtime 3x ./cluster/admission/)
scrape=(go test -run '^$' -bench 'BenchmarkAgentMetricsScrape' -benchtime 200x ./node/)
storeb=(go test -run '^$' -bench 'BenchmarkDiskCreate' -benchtime 2000x ./cluster/store/)
failover=(go test -run '^$' -bench 'BenchmarkLeaderFailover' -benchtime 5x ./cluster/raftlog/)
storetp=(go test -run '^$' -bench 'BenchmarkStoreWriteThroughput' -benchtime 3s ./cluster/store/)
apitp=(go test -run '^$' -bench 'BenchmarkAPIWriteThroughput' -benchtime 3s -count 3 ./cluster/apiserver/)
echo "\$ ${api[*]}"
"${api[@]}" | tee "$out/api.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${bind[*]}"
"${bind[@]}" | tee "$out/bind.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${scrape[*]}"
"${scrape[@]}" | tee "$out/scrape.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${storeb[*]}"
"${storeb[@]}" | tee "$out/store.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${failover[*]}"
"${failover[@]}" | tee "$out/failover.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${storetp[*]}"
"${storetp[@]}" | tee "$out/storetp.txt" | grep -E '^Benchmark' || true
echo
echo "\$ ${apitp[*]}"
"${apitp[@]}" | tee "$out/apitp.txt" | grep -E '^Benchmark' || true
echo

# metric NAME FILE BENCH: the value reported before NAME on BENCH's lines
metric() { awk -v m="$1" -v b="$3" '$1 ~ b { for (i = 2; i < NF; i++) if ($(i+1) == m) print $i }' "$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
sched_rate=$(metric pods/s "$out/sched.txt" BenchmarkSchedule10kPods1kNodes | median)
sched_store=$(metric pods/s "$out/schedstore.txt" BenchmarkScheduleThroughStore)
bigcommit=$(metric apply-s "$out/commit.txt" 'BenchmarkBigCommit/10000')
pushhttp=$(metric ms-webhook-to-applied "$out/commit.txt" 'BenchmarkPushToApplied/http')
pushssh=$(metric ms-webhook-to-applied "$out/commit.txt" 'BenchmarkPushToApplied/ssh')
p50=$(metric p50-s "$out/e2e.txt" BenchmarkCommitToRunning)
replacep50=$(metric replace-p50-s "$out/e2e.txt" BenchmarkCommitToRunning)
ratio=$(metric ratio "$out/e2e.txt" BenchmarkPodStartVsPodmanRun)
plain=$(metric podman-run-s "$out/e2e.txt" BenchmarkPodStartVsPodmanRun)
flot=$(metric flotilla-s "$out/e2e.txt" BenchmarkPodStartVsPodmanRun)
execratio=$(metric exec-ratio "$out/e2e.txt" BenchmarkStreams)
kexec=$(metric kubectl-exec-ms "$out/e2e.txt" BenchmarkStreams)
pexec=$(metric podman-exec-ms "$out/e2e.txt" BenchmarkStreams)
fwdratio=$(metric forward/direct "$out/e2e.txt" BenchmarkStreams)
notready=$(metric notready-s "$out/e2e.txt" BenchmarkLabFailover)
moved=$(metric rescheduled-s "$out/e2e.txt" BenchmarkLabFailover)
joined=$(metric join-s "$out/e2e.txt" BenchmarkLabFailover)
p50three=$(metric p50-s "$out/e2e.txt" BenchmarkLabThreeServers)
rssthree=$(metric max-rss-mb "$out/e2e.txt" BenchmarkLabThreeServers)
idlecpu=$(metric total-%core "$out/e2e.txt" BenchmarkIdle100Pods)
idlemb=$(metric flotilla-MB "$out/e2e.txt" BenchmarkIdle100Pods)
netratio=$(metric cross/same "$out/net.txt" BenchmarkPodToPodThroughput)
vipratio=$(metric vip/pod-conn "$out/svc.txt" BenchmarkVIPvsPodIP)
vipka=$(metric vip/pod-keepalive "$out/svc.txt" BenchmarkVIPvsPodIP)
svcupdate=$(metric median-ms "$out/svc.txt" 'BenchmarkSync1000Services5000Endpoints/update')
svcrewrite=$(metric median-ms "$out/svc.txt" 'BenchmarkSync1000Services5000Endpoints/rewrite')
apip99=$(metric p99-ms "$out/api.txt" 'BenchmarkAPIWrite/create-deployment(-[0-9]+)?$')
apip50=$(metric p50-ms "$out/api.txt" 'BenchmarkAPIWrite/create-deployment(-[0-9]+)?$')
bindrate=$(metric pods/s "$out/bind.txt" 'BenchmarkBindings/admitted')
authget=$(metric overhead-% "$out/api.txt" 'BenchmarkAuthorization/get-pod')
authcreate=$(metric overhead-% "$out/api.txt" 'BenchmarkAuthorization/create-configmap')
secretget=$(metric overhead-% "$out/api.txt" 'BenchmarkSecretRead/get-secret')
scrapep99=$(metric p99-ms "$out/scrape.txt" BenchmarkAgentMetricsScrape)
secretlist=$(metric overhead-% "$out/api.txt" 'BenchmarkSecretRead/list-100-secrets')

verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "") print "not measured"; else if ((op == ">=" && v >= t) || (op == "<=" && v <= t)) print "meets"; else print "MISSES" }'; }
printf '%-52s %-22s %-12s %s\n' "figure" "measured" "target" "verdict"
printf '%-52s %-22s %-12s %s\n' "scheduler: 10,000 pods onto 1,000 nodes (median of 3)" "${sched_rate:-?} pods/s" ">= 10000" "$(verdict "$sched_rate" 10000 '>=')"
printf '%-52s %-22s %-12s %s\n' "  the same through the store, fsynced, batched" "${sched_store:-?} pods/s" ">= 5000" "$(verdict "$sched_store" 5000 '>=')"
printf '%-52s %-22s %-12s %s\n' "commit of 10,000 ConfigMaps: Git -> store (mean of 3)" "${bigcommit:-?} s" "<= 10" "$(verdict "$bigcommit" 10 '<=')"
printf '%-52s %-22s %-12s %s\n' "git push's webhook -> commit applied: HTTP / SSH" "${pushhttp:-?} / ${pushssh:-?} ms" "<= 1000" "$(verdict "$(printf '%s\n%s\n' "$pushhttp" "$pushssh" | sort -g | tail -1)" 1000 '<=')"
printf '%-52s %-22s %-12s %s\n' "commit -> 10 pods Running, one idle node (p50 of 7)" "${p50:-?} s" "<= 2" "$(verdict "$p50" 2 '<=')"
printf '%-52s %-22s %-12s %s\n' "  the same while 10 old pods are removed (p50 of 7)" "${replacep50:-?} s" "-" "for the record"
printf '%-52s %-22s %-12s %s\n' "pod start: Flotilla / podman run -d (medians of 7)" "${ratio:-?} (${flot:-?} s / ${plain:-?} s)" "<= 1.3" "$(verdict "$ratio" 1.3 '<=')"
printf '%-52s %-22s %-12s %s\n' "kubectl exec -- true / podman exec true (medians of 9)" "${execratio:-?} (${kexec:-?} / ${pexec:-?} ms)" "<= 1.5" "$(verdict "$execratio" 1.5 '<=')"
printf '%-52s %-22s %-12s %s\n' "kubectl port-forward / direct to the pod IP, 64 MiB" "${fwdratio:-?}" ">= 0.5" "$(verdict "$fwdratio" 0.5 '>=')"
printf '%-52s %-22s %-12s %s\n' "node killed -> NotReady (3-node lab)" "${notready:-?} s" "<= 5" "$(verdict "$notready" 5 '<=')"
printf '%-52s %-22s %-12s %s\n' "node killed -> its pods Running elsewhere" "${moved:-?} s" "<= 35" "$(verdict "$moved" 35 '<=')"
printf '%-52s %-22s %-12s %s\n' "a node joins: token -> certificates -> Ready" "${joined:-?} s" "<= 5" "$(verdict "$joined" 5 '<=')"
printf '%-52s %-22s %-12s %s\n' "100 idle pods: Flotilla + its Podman, % of one core" "${idlecpu:-?} %" "<= 5" "$(verdict "$idlecpu" 5 '<=')"
printf '%-52s %-22s %-12s %s\n' "100 idle pods: Flotilla's resident memory (max)" "${idlemb:-?} MB" "<= 150" "$(verdict "$idlemb" 150 '<=')"
printf '%-52s %-22s %-12s %s\n' "pod-to-pod throughput, across nodes / same node" "${netratio:-?}" ">= 0.7" "$(verdict "$netratio" 0.7 '>=')"
printf '%-52s %-22s %-12s %s\n' "requests/s through a VIP / to the pod IP (new conn)" "${vipratio:-?} (keep-alive ${vipka:-?})" ">= 0.9" "$(verdict "$vipratio" 0.9 '>=')"
printf '%-52s %-22s %-12s %s\n' "re-program 1,000 services / 5,000 endpoints (median)" "${svcupdate:-?} ms" "<= 200" "$(verdict "$svcupdate" 200 '<=')"
printf '%-52s %-22s %-12s %s\n' "  the same, whole table rewritten (agent start)" "${svcrewrite:-?} ms" "<= 200" "$(verdict "$svcrewrite" 200 '<=')"
printf '%-52s %-22s %-12s %s\n' "API write (kubectl create of a Deployment), p99" "${apip99:-?} ms (p50 ${apip50:-?})" "<= 25" "$(verdict "$apip99" 25 '<=')"
printf '%-52s %-22s %-12s %s\n' "RBAC+audit cost at p99: GET pod / create ConfigMap" "${authget:-?} % / ${authcreate:-?} %" "<= 10" "$(verdict "$(printf '%s\n%s\n' "$authget" "$authcreate" | sort -g | tail -1)" 10 '<=')"
printf '%-52s %-22s %-12s %s\n' "Secrets encrypted at rest, cost at p99: GET / LIST 100" "${secretget:-?} % / ${secretlist:-?} %" "<= 5" "$(verdict "$(printf '%s\n%s\n' "$secretget" "$secretlist" | sort -g | tail -1)" 5 '<=')"
printf '%-52s %-22s %-12s %s\n' "10,000 bindings through admission, fsync, Txns of 500" "${bindrate:-?} pods/s" ">= 5000" "$(verdict "$bindrate" 5000 '>=')"
storefsync=$(metric p50-ms "$out/store.txt" 'BenchmarkDiskCreate/fsync')
storeraft=$(metric p50-ms "$out/store.txt" 'BenchmarkDiskCreate/raft')
storeratio=$(awk -v a="$storeraft" -v b="$storefsync" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
printf '%-52s %-22s %-12s %s\n' "store write p50: one-voter Raft log / own fsync" "${storeratio:-?} (${storeraft:-?} / ${storefsync:-?} ms)" "<= 1.1" "$(verdict "$storeratio" 1.1 '<=')"
failoverp50=$(metric failover-ms "$out/failover.txt" BenchmarkLeaderFailover)
failovermax=$(metric failover-max-ms "$out/failover.txt" BenchmarkLeaderFailover)
printf '%-52s %-22s %-12s %s\n' "leader killed -> writes accepted again (3 servers)" "${failoverp50:-?} ms (max ${failovermax:-?})" "<= 3000" "$(verdict "$failoverp50" 3000 '<=')"
tp1=$(metric writes/s "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=1-[0-9]+$')
tp3=$(metric writes/s "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=3-[0-9]+$')
tpspread=$(metric writes/s "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=3-spread')
tpratio=$(awk -v a="$tp3" -v b="$tp1" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
spreadratio=$(awk -v a="$tpspread" -v b="$tp1" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
tp1=${tp1%.*} tp3=${tp3%.*} tpspread=${tpspread%.*}
cpu1=$(metric cpu-us/write "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=1-[0-9]+$')
cpu3=$(metric cpu-us/write "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=3-[0-9]+$')
stale3=$(metric stale-errors "$out/storetp.txt" 'BenchmarkStoreWriteThroughput/servers=3-spread' | awk '{ printf "%.0f", $1 }')
writes3=$(awk '$1 ~ /BenchmarkStoreWriteThroughput\/servers=3-spread/ { print $2 }' "$out/storetp.txt")
api1=$(metric writes/s "$out/apitp.txt" 'BenchmarkAPIWriteThroughput/servers=1' | median)
api3=$(metric writes/s "$out/apitp.txt" 'BenchmarkAPIWriteThroughput/servers=3' | median)
apiratio=$(awk -v a="$api3" -v b="$api1" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b }')
api1=${api1%.*} api3=${api3%.*}
printf '%-52s %-22s %-12s %s\n' "API writes/s, 16 clients (median of 3): 3 / 1 server" "${apiratio:-?} (${api3:-?} / ${api1:-?} w/s)" ">= 0.5" "$(verdict "$apiratio" 0.5 '>=')"
printf '%-52s %-22s %-12s %s\n' "  the store alone, 16 writers at the leader: 3 / 1" "${tpratio:-?} (${tp3:-?} / ${tp1:-?} w/s)" "-" "for the record"
printf '%-52s %-22s %-12s %s\n' "  CPU per write, all servers on this machine: 3 / 1" "${cpu3:-?} / ${cpu1:-?} us" "-" "for the record"
printf '%-52s %-22s %-12s %s\n' "  writers spread over the 3 servers / 1 server" "${spreadratio:-?} (${tpspread:-?} w/s)" "-" "for the record"
printf '%-52s %-22s %-12s %s\n' "  the same, spread: writes failed with ErrStale" "${stale3:-?} of ${writes3:-?}" "-" "for the record"
printf '%-52s %-22s %-12s %s\n' "commit -> 10 pods Running, 3 servers, 3 nodes (p50)" "${p50three:-?} s" "<= 2" "$(verdict "$p50three" 2 '<=')"
printf '%-52s %-22s %-12s %s\n' "server RSS, 3 servers, 1,000 pods (largest)" "${rssthree:-?} MB" "<= 300" "$(verdict "$rssthree" 300 '<=')"
printf '%-52s %-22s %-12s %s\n' "agent /metrics scrape, 100 pods (stats cached), p99" "${scrapep99:-?} ms" "<= 50" "$(verdict "$scrapep99" 50 '<=')"
