#!/usr/bin/env bash
# Slurm HealthCheckProgram wrapper for pytest-rigcheck. In slurm.conf:
#   HealthCheckProgram=/usr/local/sbin/rigcheck-healthcheck.sh
#   HealthCheckInterval=3600
#   HealthCheckNodeState=IDLE        # not while jobs run: the checks read the GPUs
#
# slurm.conf(5), HealthCheckProgram (https://slurm.schedmd.com/slurm.conf.html#OPT_HealthCheckProgram): the
# program runs as root on every node that responds; "any action to be taken must be explicitly performed by
# the program (e.g. execute 'scontrol update NodeName=foo State=drain Reason=tooHot')"; it is killed if it
# has not ended within 60 seconds; when slurmd starts it is run until it exits 0, before the node registers.
# So this wrapper runs the rig checks that read state, not the measurements (-m "not rig_measure", no soak,
# no model server), under a timeout below those 60 s, and on a failure drains the node itself.
#
# Exit status (as LBNL NHC, the usual HealthCheckProgram): 0 healthy; 1 a check failed, node drained;
# 2 the checks could not run or finish (timeout, usage error, no report), node drained: not proven healthy.
#
# Environment:
#   RIGCHECK_HC_DRY_RUN=1   print the scontrol drain command instead of running it (also: --dry-run)
#   RIGCHECK_HC_NODENAME    Slurm's name for this node (default: $SLURMD_NODENAME, else hostname -s)
#   RIGCHECK_HC_TIMEOUT     seconds for the checks (default 45)
#   RIGCHECK_HC_OUT         folder for the node's report, JUnit and .prom (default /var/lib/rigcheck)
#   RIGCHECK_PYTHON         python with pytest-rigcheck (default python3); RIGCHECK_PROFILE, RIGCHECK_SNAPSHOT
#                           and the other RIGCHECK_* settings are passed on to pytest.
set -uo pipefail
dry=${RIGCHECK_HC_DRY_RUN:-0}
[[ "${1:-}" == "--dry-run" ]] && dry=1
node=${RIGCHECK_HC_NODENAME:-${SLURMD_NODENAME:-$(hostname -s)}}
limit=${RIGCHECK_HC_TIMEOUT:-45}
out=${RIGCHECK_HC_OUT:-/var/lib/rigcheck}
py=${RIGCHECK_PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out" || { echo "rigcheck-healthcheck: cannot make $out" >&2; exit 2; }
report=$out/$node.json
rm -f "$report"

RIGCHECK_NODE=$node timeout -k 5 "$limit" "$here/../fleet/rigcheck-node.sh" "$out" \
    -m "not rig_measure" -k "not soak and not vllm" --tb=no >"$out/$node.healthcheck.log" 2>&1
rc=$?

# The reason: failing checks from the report (Slurm shows it in sinfo -R), or why there is none.
reason=$("$py" - "$report" "$rc" <<'PY'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    doc = json.load(open(path, encoding="utf-8"))
    bad = [r["nodeid"].rsplit("::", 1)[-1] for r in doc["results"] if r.get("status") in ("fail", "unreadable")]
except (OSError, ValueError, KeyError, TypeError):
    bad = None
if rc in (124, 137):
    print(f"rigcheck: checks did not finish in time (exit {rc})")
elif bad:
    more = f" +{len(bad) - 3} more" if len(bad) > 3 else ""
    print("rigcheck: " + ", ".join(bad[:3]) + more)
elif rc != 0:
    print(f"rigcheck: checks could not run (pytest exit {rc}{', no report' if bad is None else ''})")
PY
)
if [[ $rc -eq 0 && -z "$reason" ]]; then
    exit 0
fi
cmd=(scontrol update "nodename=$node" state=drain "reason=${reason:0:200}")
if [[ "$dry" == 1 ]]; then
    printf 'rigcheck-healthcheck: dry run, would run:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
else
    "${cmd[@]}" || echo "rigcheck-healthcheck: scontrol failed to drain $node" >&2
fi
[[ $rc -eq 1 ]] && exit 1
exit 2
