#!/usr/bin/env bash
# Run a command with a Kafka broker: KAFKA_BOOTSTRAP_SERVERS when it is set, else the
# local broker of deploy/kafka/kafka.sh, started for the command and stopped after it
# (only if this script started it; KEEP_RUNNING=1 leaves it up).
#   deploy/kafka/with-broker.sh pytest -q
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  echo "with-broker: using KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS" >&2
  exec "$@"
fi

started=0
if ! "$here/kafka.sh" status >/dev/null 2>&1; then started=1; fi
t0=$SECONDS
KAFKA_BOOTSTRAP_SERVERS="$("$here/kafka.sh" start)"
export KAFKA_BOOTSTRAP_SERVERS
echo "with-broker: broker $KAFKA_BOOTSTRAP_SERVERS ready in $((SECONDS - t0))s" >&2
cleanup() {
  if [ "$started" = 1 ] && [ "${KEEP_RUNNING:-0}" != 1 ]; then "$here/kafka.sh" stop; fi
}
trap cleanup EXIT
"$@"
