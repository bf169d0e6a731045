#!/usr/bin/env bash
# One node's rig check, the same under Slurm, Ansible and Kubernetes:
#   rigcheck-node.sh OUTDIR [pytest args...]
# writes OUTDIR/NODE.json (--rig-report), OUTDIR/NODE.xml (JUnit), OUTDIR/NODE.prom (--rig-prometheus) and,
# on a live machine, OUTDIR/NODE.capture.tar.gz (rigcheck capture), NODE being $RIGCHECK_NODE or the host name.
# With RIGCHECK_SNAPSHOT set (a snapshot replayed as the node, as in CI) there is no live capture.
# Python: $RIGCHECK_PYTHON (default python3), with pytest-rigcheck installed. Exit status: pytest's
# (0 all checks pass, 1 a check failed, 2 interrupted, 4 usage error).
set -uo pipefail
out=${1:?usage: rigcheck-node.sh OUTDIR [pytest args...]}
shift
node=${RIGCHECK_NODE:-$(hostname)}
py=${RIGCHECK_PYTHON:-python3}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 4
if [[ -n "${RIGCHECK_SNAPSHOT:-}" && -e "$RIGCHECK_SNAPSHOT" ]]; then
    RIGCHECK_SNAPSHOT=$(realpath "$RIGCHECK_SNAPSHOT") && export RIGCHECK_SNAPSHOT
fi
if [[ -z "${RIGCHECK_SNAPSHOT:-}" ]]; then
    "$py" -m pytest_rigcheck.cli capture "$out/$node.capture.tar.gz" --name "$node" ||
        echo "rigcheck-node: $node: capture failed (the checks still run)" >&2
    set -- --rig "$@"
fi
cd "$out" || exit 4  # away from any project's pytest.ini or conftest.py
exec "$py" -m pytest -p no:cacheprovider -q --rig-report="$out/$node.json" --junitxml="$out/$node.xml" \
    --rig-prometheus="$out/$node.prom" "$@"
