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
#
# A secured broker (what managed Kafka looks like: TLS + SASL/SCRAM + ACLs), KAFKA_LOCAL_SECURE=1:
#   the client port is a SASL_SSL listener (SCRAM-SHA-512), authorization by
#   StandardAuthorizer (no ACL: denied); the controller (port+1) and an inter-broker
#   PLAINTEXT listener (port+2) stay on 127.0.0.1, trusted (their ANONYMOUS principal is a
#   super user: never expose them). The readiness probe uses the inter-broker listener.
#   KAFKA_LOCAL_TLS_KEYSTORE  PEM file: the broker's private key (PKCS#8, unencrypted) and
#                             its certificate chain (required; e.g. from a throwaway CA)
#   KAFKA_LOCAL_SCRAM_USERS   file of user=password lines: SCRAM-SHA-512 users created at
#                             format time (required; passwords: letters, digits, - _ .)
#   KAFKA_LOCAL_SUPER_USER    the admin user, a super user (default admin; must be in the file)
#   The users exist from the first start on (storage format); `reset` deletes them with the data.
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
secure="${KAFKA_LOCAL_SECURE:-0}"
probe="$bootstrap"  # what the readiness probe (PLAINTEXT) asks
if [ "$secure" = 1 ]; then
  iport="$((port + 2))"
  probe="127.0.0.1:$iport"
fi

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
  java -cp "$libs/*:$cls" -Dorg.slf4j.simpleLogger.defaultLogLevel=off Ready "$probe" \
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

listener_config() {
  if [ "$secure" != 1 ]; then
    cat <<CFG
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
CFG
    return 0
  fi
  local ks="$KAFKA_LOCAL_TLS_KEYSTORE" super="${KAFKA_LOCAL_SUPER_USER:-admin}"
  cat <<CFG
listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port,INTERNAL://127.0.0.1:$iport
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$ks
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$super;User:ANONYMOUS
CFG
}

check_secure() {  # the files KAFKA_LOCAL_SECURE=1 needs (messages never show a password)
  [ "$secure" = 1 ] || return 0
  local ks="${KAFKA_LOCAL_TLS_KEYSTORE:-}" f="${KAFKA_LOCAL_SCRAM_USERS:-}" line
  local super="${KAFKA_LOCAL_SUPER_USER:-admin}" has_super=0
  [ -n "$ks" ] && [ -r "$ks" ] \
    || { say "KAFKA_LOCAL_SECURE=1 needs KAFKA_LOCAL_TLS_KEYSTORE (PEM key + certificate chain)"; exit 2; }
  [ -n "$f" ] && [ -r "$f" ] \
    || { say "KAFKA_LOCAL_SECURE=1 needs KAFKA_LOCAL_SCRAM_USERS (a file of user=password lines)"; exit 2; }
  while IFS= read -r line || [ -n "$line" ]; do
    [ -z "$line" ] && continue
    if ! [[ "$line" =~ ^[A-Za-z0-9._-]+=[A-Za-z0-9._-]+$ ]]; then
      say "KAFKA_LOCAL_SCRAM_USERS: a line is not user=password (letters, digits, - _ .)"; exit 2
    fi
    [ "${line%%=*}" = "$super" ] && has_super=1
  done <"$f"
  [ "$has_super" = 1 ] || { say "KAFKA_LOCAL_SCRAM_USERS has no line for the super user $super"; exit 2; }
}

scram_args() {  # --add-scram for each user=password line of KAFKA_LOCAL_SCRAM_USERS
  [ "$secure" = 1 ] || return 0
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    [ -z "$line" ] && continue
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=${line%%=*},password=${line#*=}]"
  done <"$KAFKA_LOCAL_SCRAM_USERS"
}

write_config() {
  cat >"$conf" <<CFG
# Written by deploy/kafka/kafka.sh: single-node KRaft for local runs and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
$(listener_config)
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
    check_secure
    write_config
    if [ ! -f "$data/meta.properties" ]; then
      local cluster
      cluster="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
      local scram=()
      mapfile -t scram < <(scram_args)
      # the SCRAM passwords are on this command line for the format only (a local broker)
      java -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster" -c "$conf" "${scram[@]}" \
        >"$log" 2>&1 || { say "storage format failed:"; tail -20 "$log" >&2; exit 1; }
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
