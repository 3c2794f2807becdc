#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft: broker + controller in one JVM), no Docker.
#
#   deploy/kafka/kafka.sh start    fetch jars (first time), format storage (first time), start,
#                                  wait until the broker answers a metadata request, print the
#                                  bootstrap address on stdout. Idempotent: a broker already
#                                  answering on the port is reused (and never stopped by us).
#   deploy/kafka/kafka.sh stop     stop the broker this script started (only its own pid)
#   deploy/kafka/kafka.sh status   say whether it runs and answers
#   deploy/kafka/kafka.sh fetch    only download the jars
#   deploy/kafka/kafka.sh reset    stop, then delete the data dir (topics, offsets)
#
# Settings (environment):
#   KAFKA_LOCAL_PORT   client port on 127.0.0.1            (default 9092; controller uses port+1)
#   KAFKA_LOCAL_DIR    state: jars, config, data, log, pid (default <repo>/.cache/kafka)
#   KAFKA_VERSION      org.apache.kafka:kafka_2.13 version (default 4.4.0, see pom.xml)
#   KAFKA_HEAP_OPTS    JVM heap                            (default -Xms256m -Xmx1g)
#   KAFKA_READY_TIMEOUT seconds to wait for readiness      (default 90)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${KAFKA_LOCAL_PORT:-9092}"
cport="$((port + 1))"
dir="${KAFKA_LOCAL_DIR:-$repo/.cache/kafka}"
version="${KAFKA_VERSION:-4.4.0}"
heap="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
timeout="${KAFKA_READY_TIMEOUT:-90}"
libs="$dir/libs-$version"
data="$dir/data-$port"
conf="$dir/server-$port.properties"
pidfile="$dir/broker-$port.pid"
log="$dir/broker-$port.log"
bootstrap="127.0.0.1:$port"

say() { echo "kafka.sh: $*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { say "needs '$1' on PATH ($2)"; exit 2; }
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  need java "Java 17+"; need mvn "Apache Maven"
  say "fetching Apache Kafka $version from Maven Central into $libs"
  rm -rf "$libs.tmp"
  if ! mvn -q -B -f "$here/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs.tmp" \
    >"$dir/mvn.log" 2>&1; then
    say "maven could not fetch the broker; its output:"; cat "$dir/mvn.log" >&2; exit 1
  fi
  rm -rf "$libs"; mv "$libs.tmp" "$libs"; touch "$libs/.complete"
}

probe_class() {
  local cls="$dir/probe-$version"
  if [ ! -f "$cls/Ready.class" ]; then
    mkdir -p "$cls"
    javac -nowarn -cp "$libs/*" -d "$cls" "$here/Ready.java" >&2
  fi
  echo "$cls"
}

answers() {  # does a broker answer a metadata request on the port?
  local cls; cls="$(probe_class)"
  java -cp "$libs/*:$cls" -Dorg.slf4j.simpleLogger.defaultLogLevel=off Ready "$bootstrap" \
    >/dev/null 2>&1
}

our_pid() {  # the pid we started, if it is still that broker
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$conf"; then
    echo "$pid"; return 0
  fi
  rm -f "$pidfile"; return 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  cat >"$conf" <<CFG
# Written by deploy/kafka/kafka.sh: single-node KRaft for local runs and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=1
auto.create.topics.enable=true
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
CFG
}

start() {
  mkdir -p "$dir"
  fetch
  if pid="$(our_pid)"; then
    if answers; then say "already running (pid $pid)"; echo "$bootstrap"; return 0; fi
  elif port_busy "$port"; then
    if answers; then say "a broker already answers on $bootstrap: reusing it"; echo "$bootstrap"; return 0; fi
    say "port $port is taken by something that is not a Kafka broker"; exit 1
  fi
  if [ -z "${pid:-}" ]; then
    write_config
    if [ ! -f "$data/meta.properties" ]; then
      local cluster
      cluster="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
      java -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster" -c "$conf" >"$log" 2>&1 \
        || { say "storage format failed:"; tail -20 "$log" >&2; exit 1; }
    fi
    # shellcheck disable=SC2086
    setsid nohup java $heap -XX:+UseG1GC -Djava.awt.headless=true \
      -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
      -cp "$libs/*" kafka.Kafka "$conf" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    pid="$(cat "$pidfile")"
  fi
  local t0=$SECONDS
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then say "broker exited; last log lines:"; tail -30 "$log" >&2; exit 1; fi
    if (( SECONDS - t0 > timeout )); then say "not ready after ${timeout}s; see $log"; exit 1; fi
    sleep 0.5
  done
  say "ready on $bootstrap (pid $pid, log $log)"
  echo "$bootstrap"
}

stop() {
  local pid
  if ! pid="$(our_pid)"; then say "not started by this script: nothing to stop"; return 0; fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "still running after 30s, killing"; kill -9 "$pid" || true; fi
  rm -f "$pidfile"
  say "stopped (pid $pid)"
}

status() {
  if pid="$(our_pid)"; then say "running (pid $pid)"; else say "not started by this script"; fi
  if [ -f "$libs/.complete" ] && answers; then say "answering on $bootstrap"; return 0; fi
  say "nothing answers on $bootstrap"; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) mkdir -p "$dir"; fetch ;;
  reset) stop; rm -rf "$data" "$conf"; say "data removed" ;;
  *) echo "usage: $0 start|stop|status|fetch|reset" >&2; exit 2 ;;
esac
