#!/usr/bin/env bash
# A real single-host Slurm cluster for CI: several node names on this host (Debian's slurm-wlm is built
# with multiple-slurmd support: `slurmd -N NAME`), each replaying a different shipped snapshot as "its" rig,
# then `rigcheck merge` over the nodes' reports.
#
#   tools/ci_slurm.sh WORKDIR SNAPSHOT...      (one node per snapshot, at most 8)
#
# Writes WORKDIR/slurm.conf, starts munged (if none answers), slurmctld and one slurmd per node, all in the
# foreground under this script (stopped on exit), runs
#   srun --nodes N --ntasks-per-node 1 tools/fleet/rigcheck-node.sh WORKDIR/reports
# with RIGCHECK_SNAPSHOT chosen by $SLURM_NODEID and RIGCHECK_NODE=$SLURMD_NODENAME, then
#   rigcheck merge WORKDIR/reports/node*.json --out WORKDIR/fleet
# and exits with merge's status (0 all pass, 1 a node fails, 2 a report missing), or 3 when Slurm itself
# could not be brought up (its logs are printed). Needs root (munge key, slurmd), slurm-wlm and munge.
# Environment: RIGCHECK_PYTHON (the python with pytest-rigcheck; default: this checkout's .venv),
# RIGCHECK_SLURM_PORT (slurmctld's port, default 16817; slurmd ports follow it), RIGCHECK_SRUN_ARGS.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: ci_slurm.sh WORKDIR SNAPSHOT...}
shift
(($# >= 1 && $# <= 8)) || { echo "ci_slurm: give 1 to 8 snapshots" >&2; exit 3; }
mkdir -p "$work" && work=$(cd "$work" && pwd)
export RIGCHECK_PYTHON=${RIGCHECK_PYTHON:-$here/.venv/bin/python}
port=${RIGCHECK_SLURM_PORT:-16817}
n=$#
snaps=()
for s in "$@"; do snaps+=("$(realpath "$s")"); done
for tool in slurmctld slurmd srun scontrol munged munge; do
    command -v "$tool" >/dev/null || { echo "ci_slurm: $tool not found (apt-get install slurm-wlm munge)" >&2; exit 3; }
done

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

# munge: Slurm's authentication. Debian's package made /etc/munge/munge.key; a daemon of our own if none runs.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "munged --force" || runuser -u munge -- munged --force
    else
        munged --force
    fi
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n </dev/null | unmunge >/dev/null || { echo "ci_slurm: munged did not start" >&2; exit 3; }
fi

mkdir -p "$work/state" "$work/spool" "$work/log" "$work/reports"
conf=$work/slurm.conf
{
    echo "ClusterName=rigcheck-ci"
    echo "SlurmctldHost=localhost(127.0.0.1)"
    echo "SlurmctldPort=$port"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "StateSaveLocation=$work/state"
    echo "SlurmdSpoolDir=$work/spool/%n"
    echo "SlurmctldPidFile=$work/slurmctld.pid"
    echo "SlurmdPidFile=$work/slurmd-%n.pid"
    echo "SlurmctldLogFile=$work/log/slurmctld.log"
    echo "SlurmdLogFile=$work/log/slurmd-%n.log"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "SwitchType=switch/none"
    echo "MpiDefault=none"
    echo "SchedulerType=sched/builtin"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "ReturnToService=2"
    echo "SlurmdTimeout=60"
    echo "InactiveLimit=0"
    echo "KillWait=5"
    for i in $(seq "$n"); do
        echo "NodeName=node$i NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$((port + i)) CPUs=1 State=UNKNOWN"
    done
    echo "PartitionName=ci Nodes=node[1-$n] Default=YES MaxTime=15 State=UP OverSubscribe=YES"
} >"$conf"
export SLURM_CONF=$conf

slurmctld -D -i -f "$conf" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
for i in $(seq "$n"); do
    mkdir -p "$work/spool/node$i"
    slurmd -D -N "node$i" -f "$conf" >"$work/log/slurmd-node$i.out" 2>&1 &
    pids+=($!)
done
up=0
for _ in $(seq 120); do
    idle=$(sinfo -h -p ci -t idle -o '%D' 2>/dev/null | head -1)
    [[ "${idle:-0}" -ge "$n" ]] && { up=1; break; }
    sleep 0.5
done
if ((!up)); then
    echo "ci_slurm: the $n slurmd nodes did not come up idle within 60 s" >&2
    sinfo -N >&2 2>&1
    tail -n 20 "$work"/log/* >&2
    exit 3
fi
sinfo -N

# One task per node; the node's snapshot by its SLURM_NODEID, its name by SLURMD_NODENAME.
export RIGCHECK_CI_SNAPS="${snaps[*]}" RIGCHECK_CI_OUT=$work/reports
# shellcheck disable=SC2016
timeout 600 srun --nodes "$n" --ntasks-per-node 1 --time 10 --kill-on-bad-exit=0 ${RIGCHECK_SRUN_ARGS:-} \
    bash -c 'set -- $RIGCHECK_CI_SNAPS; shift "$SLURM_NODEID"
             RIGCHECK_SNAPSHOT=$1 RIGCHECK_NODE=$SLURMD_NODENAME exec "$0" "$RIGCHECK_CI_OUT"' \
    "$here/tools/fleet/rigcheck-node.sh" 2>&1 | tail -n 40
echo "ci_slurm: srun exit ${PIPESTATUS[0]}"
reports=()
for i in $(seq "$n"); do reports+=("$work/reports/node$i.json"); done
"$RIGCHECK_PYTHON" -m pytest_rigcheck.cli merge "${reports[@]}" --out "$work/fleet"
merged=$?

# The HealthCheckProgram wrapper against this cluster, for real: the last node, on its snapshot, drains
# itself through slurmctld when a check fails (RIGCHECK_CI_HEALTHCHECK=1).
if [[ "${RIGCHECK_CI_HEALTHCHECK:-0}" == 1 ]]; then
    RIGCHECK_SNAPSHOT=${snaps[n - 1]} RIGCHECK_HC_NODENAME=node$n RIGCHECK_HC_OUT=$work/healthcheck \
        "$here/tools/slurm/rigcheck-healthcheck.sh"
    echo "ci_slurm: healthcheck exit $?"
    scontrol show node "node$n" | grep -E -o "(State|Reason)=[^ ]+( [^=]+$)?"
fi
exit "$merged"
