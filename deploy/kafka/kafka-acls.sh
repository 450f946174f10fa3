#!/usr/bin/env bash
# The ACLs of deploy/compose.sasl.yml: each principal gets the topics, consumer groups and
# operations its service uses, nothing else (the table in docs/security.md says why each).
# Runs as `admin` in the kafka-acls job; adding an ACL that exists changes nothing.
#
# Environment (all optional):
#   LOANSTREAM_KAFKA_TOPIC_PREFIX    prepended to every topic name, as the services do
#   LOANSTREAM_SCORER_APP_ID         the scorer's consumer group (default loanstream-scorer)
#   LOANSTREAM_MONITOR_APP_ID        the monitor's consumer group and changelog prefix
#   LOANSTREAM_NOTIFY_GROUP_ID       the notifier's consumer group (default loanstream-notifier)
#   LOANSTREAM_ACL_SELECTIVE_LABELS  1: the producer may read loan.predictions (--labels approved)
#   KAFKA_BOOTSTRAP, KAFKA_COMMAND_CONFIG, KAFKA_ACLS   where and how to call kafka-acls.sh
#   DRY_RUN                          1: print the kafka-acls.sh calls instead of running them
set -euo pipefail

P="${LOANSTREAM_KAFKA_TOPIC_PREFIX:-}"
SCORER_GROUP="${LOANSTREAM_SCORER_APP_ID:-loanstream-scorer}"
MONITOR_GROUP="${LOANSTREAM_MONITOR_APP_ID:-loanstream-monitor}"
TRAINER_GROUP=loanstream-trainer  # trainer/service.py: TrainerService.run
NOTIFIER_GROUP="${LOANSTREAM_NOTIFY_GROUP_ID:-loanstream-notifier}"  # loop/notify.py: GROUP_ID
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:19092}"
COMMAND_CONFIG="${KAFKA_COMMAND_CONFIG:-/etc/kafka/secrets/admin.properties}"
KAFKA_ACLS="${KAFKA_ACLS:-/opt/kafka/bin/kafka-acls.sh}"

# acl PRINCIPAL PATTERN(literal|prefixed) KIND(topic|group) NAME OPERATION...
acl() {
  local principal=$1 pattern=$2 kind=$3 name=$4
  shift 4
  local command=("$KAFKA_ACLS" --bootstrap-server "$BOOTSTRAP" --command-config "$COMMAND_CONFIG"
    --add --allow-principal "User:$principal" --resource-pattern-type "$pattern" "--$kind" "$name")
  for operation in "$@"; do
    command+=(--operation "$operation")
  done
  if [[ "${DRY_RUN:-}" == 1 ]]; then
    printf '%q ' "${command[@]}"
    echo
  else
    "${command[@]}" >/dev/null
  fi
}

# Readers outside any consumer group (model-update watchers, topic reads, the monitor's state)
# name a throwaway group: whole-<uuid>, read-<uuid>, state-<uuid>. They assign partitions and
# commit nothing, but the client still looks up the group's coordinator: Describe only.
readers() {
  local principal=$1
  shift
  for prefix in "$@"; do
    acl "$principal" prefixed group "$prefix" Describe
  done
}

# topics: the one-shot `loanstream topics create` (lists, creates, checks every declared topic).
acl topics prefixed topic "${P}loan." Create Describe DescribeConfigs

# producer: applications and their outcomes; a replay's rejected rows go to the dead letters.
acl producer literal topic "${P}loan.applications" Write
acl producer literal topic "${P}loan.outcomes" Write
acl producer literal topic "${P}loan.dead-letter" Write
if [[ "${LOANSTREAM_ACL_SELECTIVE_LABELS:-}" == 1 ]]; then  # decisions decide which outcomes
  acl producer literal topic "${P}loan.predictions" Read
  readers producer whole-
fi

# scorer: applications in (its Faust group), predictions and dead letters out, the champion
# from loan.model-updates.
acl scorer literal topic "${P}loan.applications" Read
acl scorer literal group "$SCORER_GROUP" Read
acl scorer literal topic "${P}loan.predictions" Write
acl scorer literal topic "${P}loan.shadow-predictions" Write  # a challenger's, beside
acl scorer literal topic "${P}loan.dead-letter" Write
acl scorer literal topic "${P}loan.model-updates" Read
readers scorer whole-

# monitor: predictions and outcomes in (its Faust group); labelled examples, drift events,
# retrain requests and dead letters out; its tables' changelogs, which it creates at start, and
# its state snapshots, both read back on start; references from loan.model-updates. At start it
# also checks the shape of every declared topic (Describe, DescribeConfigs: no data).
acl monitor literal topic "${P}loan.predictions" Read
acl monitor literal topic "${P}loan.outcomes" Read
acl monitor literal topic "${P}loan.shadow-predictions" Read
acl monitor literal group "$MONITOR_GROUP" Read
acl monitor literal topic "${P}loan.labelled" Write Read  # Read: `loanstream report`
acl monitor literal topic "${P}loan.drift-events" Write Read  # Read: `loanstream report`
acl monitor literal topic "${P}loan.retrain-requests" Write
acl monitor literal topic "${P}loan.dead-letter" Write
acl monitor literal topic "${P}loan.monitor-state" Write Read
acl monitor literal topic "${P}loan.model-updates" Read
for table in pending-predictions orphan-outcomes pending-shadow; do  # monitor/app.py: TABLES
  acl monitor literal topic "$MONITOR_GROUP-$table-changelog" Create Write Read
done
acl monitor prefixed topic "${P}loan." Describe DescribeConfigs
readers monitor whole- read- state-

# trainer (and the one-shot first-model): retrain requests in (its group), labelled examples
# read by time, champions and dead letters out; it reads loan.model-updates back at start to
# reconcile the last update with the registry.
acl trainer literal topic "${P}loan.retrain-requests" Read
acl trainer literal group "$TRAINER_GROUP" Read
acl trainer literal topic "${P}loan.labelled" Read
acl trainer literal topic "${P}loan.model-updates" Write Read
acl trainer literal topic "${P}loan.dead-letter" Write
acl trainer literal topic "${P}loan.retrain-results" Write
acl trainer literal topic "${P}loan.shadow-predictions" Read  # the shadow verdict
readers trainer whole- read-

# notifier (optional, `loanstream notify`): drift events, retrain results and model updates in
# (its group); messages the webhook never took go to the dead letters.
acl notifier literal topic "${P}loan.drift-events" Read
acl notifier literal topic "${P}loan.retrain-results" Read
acl notifier literal topic "${P}loan.model-updates" Read
acl notifier literal group "$NOTIFIER_GROUP" Read
acl notifier literal topic "${P}loan.dead-letter" Write

echo "ACLs in place for topics, producer, scorer, monitor, trainer, notifier" >&2
