"""The gate on many nodes through real engines (issue 13): Slurm (slurmctld + several slurmd on this host),
the Slurm HealthCheckProgram wrapper, Ansible over a local-connection inventory, Kubernetes manifests
through a schema validator, and one node's run killed mid-way.

The engines are installed by ``.ci/run`` (apt-get slurm-wlm munge; ansible-core in a venv under ~/.cache),
which sets ``RIGCHECK_REQUIRE_FLEET=1``: then a missing tool fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPS = ROOT / "fixtures" / "sysfs-snapshots"
REQUIRE = os.environ.get("RIGCHECK_REQUIRE_FLEET") == "1"

pytestmark = pytest.mark.fleet


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (.ci/run installs them)"
        if REQUIRE:
            pytest.fail(f"RIGCHECK_REQUIRE_FLEET=1 but {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "RIGCHECK_PYTHON": sys.executable, **extra}


# -- Slurm ------------------------------------------------------------------------------------------


def test_slurm_three_nodes_merge_and_drain(tmp_path: Path) -> None:
    """A real Slurm: node[1-3] on one host (multiple slurmd), srun runs the gate on a different snapshot
    per node, rigcheck merge names the faulty node, the HealthCheckProgram wrapper drains it."""
    need("slurmctld", "slurmd", "srun", "scontrol", "munged")
    if os.geteuid() != 0:
        pytest.skip("slurmd and munged need root") if not REQUIRE else pytest.fail("needs root")
    snaps = [SNAPS / "rtx3090x2-gen4", SNAPS / "rtxpro6000x4-switch", SNAPS / "rtx3090x2-riser-x8"]
    port = free_port()
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "ci_slurm.sh"), str(tmp_path), *map(str, snaps)],
        env=env(RIGCHECK_SLURM_PORT=str(port), RIGCHECK_CI_HEALTHCHECK="1"),
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), out
    assert "node3" in out and "idle" in out  # three slurmd came up
    fleet = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    status = {n["name"]: n["status"] for n in fleet["nodes"]}
    assert status["rtx3090x2-gen4"] == "pass" and status["rtxpro6000x4-switch"] == "pass"
    assert status["rtx3090x2-riser-x8"] == "fail" and proc.returncode == 1
    assert fleet["exit_status"] == proc.returncode
    for i in (1, 2, 3):  # each node's report, JUnit and textfile, named by its Slurm node name
        for ext in ("json", "xml", "prom"):
            assert (tmp_path / "reports" / f"node{i}.{ext}").is_file()
    # node3 (the riser at x8) drained itself through slurmctld, with the failing check as the reason
    assert "healthcheck exit 1" in out and "State=IDLE+DRAIN" in out
    assert "Reason=rigcheck: test_link_trained[0000:4b:00.0]" in out


@pytest.mark.parametrize(("snap", "rc"), [("rtx3090x2-gen4", 0), ("rtx3090x2-riser-x8", 1)])
def test_healthcheck_dry_run(tmp_path: Path, snap: str, rc: int) -> None:
    """Exit 0 healthy (nothing printed); 1 on a failing check, with the drain printed, not run."""
    proc = subprocess.run(
        [str(ROOT / "tools" / "slurm" / "rigcheck-healthcheck.sh"), "--dry-run"],
        env=env(
            RIGCHECK_SNAPSHOT=str(SNAPS / snap), RIGCHECK_HC_OUT=str(tmp_path), RIGCHECK_HC_NODENAME="gpu7"
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == rc, proc.stdout + proc.stderr
    if rc:
        assert (
            "would run: scontrol update nodename=gpu7 state=drain reason=rigcheck:\\ test_link_trained"
            in proc.stdout
        )
    else:
        assert proc.stdout == ""


def test_healthcheck_timeout_drains_as_unproven(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "tools" / "slurm" / "rigcheck-healthcheck.sh"), "--dry-run"],
        env=env(
            RIGCHECK_SNAPSHOT=str(SNAPS / "rtx3090x2-gen4"),
            RIGCHECK_HC_OUT=str(tmp_path),
            RIGCHECK_HC_NODENAME="gpu7",
            RIGCHECK_HC_TIMEOUT="0.5",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "did\\ not\\ finish\\ in\\ time" in proc.stdout


# -- a node killed mid-way ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGKILL, "missing"), (signal.SIGTERM, "incomplete")])
def test_node_killed_midway_others_merge(tmp_path: Path, sig: int, status: str) -> None:
    """Three independent node runs; one is killed mid-way: the others merge, that node is named, exit 2."""
    node = ROOT / "tools" / "fleet" / "rigcheck-node.sh"
    procs = {}
    # The victim replays its rig many times over, so it is still running when it is killed on any machine.
    victim_snaps = os.pathsep.join([str(SNAPS / "rtxpro6000x4-switch")] * 30)
    for name, snap in (
        ("a", str(SNAPS / "rtx3090x2-gen4")),
        ("b", str(SNAPS / "rtx3090x2-gen3")),
        ("victim", victim_snaps),
    ):
        procs[name] = subprocess.Popen(
            [str(node), str(tmp_path / "reports")],
            env=env(RIGCHECK_SNAPSHOT=snap, RIGCHECK_NODE=name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    victim = procs.pop("victim")
    time.sleep(4)  # collected and running, not finished (the switch rig takes several seconds)
    assert victim.poll() is None, "the victim finished before it could be killed"
    os.killpg(victim.pid, sig)
    victim.communicate(timeout=60)
    for p in procs.values():
        p.communicate(timeout=300)
    reports = [tmp_path / "reports" / f"{n}.json" for n in ("a", "b", "victim")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_rigcheck.cli",
            "merge",
            *map(str, reports),
            "--out",
            str(tmp_path / "f"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    fleet = json.loads((tmp_path / "f" / "fleet.json").read_text())
    by = {n["name"]: n["status"] for n in fleet["nodes"]}
    assert by["rtx3090x2-gen4"] == "pass" and by["rtx3090x2-gen3"] == "fail"  # the others merged
    named = [
        n for n, st in by.items() if st == status
    ]  # a stopped run names its rig(s); a missing one its file
    assert len(named) == 1 and f"NODE {named[0]}: {status.upper()}" in proc.stdout, (by, proc.stdout)
    if status == "missing":
        assert named == ["victim"]


# -- Ansible ------------------------------------------------------------------------------------------


def ansible_playbook() -> str:
    """ansible-playbook: $RIGCHECK_ANSIBLE, the venv .ci/run makes (~/.cache/rigcheck-fleet), or PATH."""
    for candidate in (
        os.environ.get("RIGCHECK_ANSIBLE", ""),
        str(Path.home() / ".cache" / "rigcheck-fleet" / "ansible-venv" / "bin" / "ansible-playbook"),
        shutil.which("ansible-playbook") or "",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    why = "ansible-playbook not installed (.ci/run installs ansible-core into ~/.cache/rigcheck-fleet)"
    if REQUIRE:
        pytest.fail(f"RIGCHECK_REQUIRE_FLEET=1 but {why}")
    pytest.skip(why)
    raise AssertionError  # unreachable


def test_ansible_playbook_over_local_inventory(tmp_path: Path) -> None:
    """The shipped playbook over the shipped local-connection inventory of three hosts, plus a fourth whose
    run dies (a snapshot that is not there): the three merge, the fourth is named missing, exit 2."""
    playbook = ansible_playbook()
    inv = (ROOT / "deploy" / "ansible" / "inventory-local.ini").read_text()
    inv = inv.replace("=fixtures/", f"={ROOT}/fixtures/")
    inv = inv.replace("[rigcheck_nodes]\n", f"[rigcheck_nodes]\nnode4 rigcheck_snapshot={tmp_path}/gone\n")
    (tmp_path / "inv.ini").write_text(inv)
    fetched = tmp_path / "fetched"
    proc = subprocess.run(
        [
            playbook,
            "-i",
            str(tmp_path / "inv.ini"),
            str(ROOT / "deploy" / "ansible" / "rigcheck.yml"),
            "-e",
            f"rigcheck_python={sys.executable}",
            "-e",
            f"rigcheck_out={tmp_path / 'remote'}",
            "-e",
            f"rigcheck_fetch_dir={fetched}",
        ],
        env={
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "atmp"),
            "ANSIBLE_HOME": str(tmp_path / "ahome"),
        },
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # ansible: a host failed (node4, and the merge's verdict)
    assert "rigcheck merge exit 2" in out
    for host in ("node1", "node2", "node3"):
        for ext in ("json", "xml", "prom"):
            assert (fetched / f"{host}.{ext}").is_file(), host
    fleet = json.loads((fetched / "fleet" / "fleet.json").read_text())
    by = {n["name"]: n["status"] for n in fleet["nodes"]}
    assert by == {
        "rtx3090x2-gen4": "pass",
        "rtx3090x2-riser-x8": "fail",
        "rtxpro6000x4-switch": "pass",
        "node4": "missing",
    }
    assert fleet["exit_status"] == 2 and fleet["failing_nodes"][0] == "node4"


# -- Kubernetes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["job.yaml", "daemonset.yaml"])
def test_k8s_manifests_validate(name: str) -> None:
    """kubernetes-validate (schemas shipped in the wheel: no network) in strict mode; the NVIDIA device
    plugin's nvidia.com/gpu resource; one node's files named by the node."""
    kv = pytest.importorskip("kubernetes_validate") if not REQUIRE else __import__("kubernetes_validate")
    import yaml

    path = ROOT / "deploy" / "k8s" / name
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)
    pod = docs[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" in container["resources"]["limits"]
    assert {"name": "RIGCHECK_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container[
        "env"
    ]
    script = container["args"][0]
    for part in ("--rig-report=", "--junitxml=", "--rig-prometheus=", "capture"):
        assert part in script


def test_k8s_validator_rejects_a_wrong_manifest() -> None:
    kv = pytest.importorskip("kubernetes_validate") if not REQUIRE else __import__("kubernetes_validate")
    bad = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "b", "resourcez": {}}]}}},
    }
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)
