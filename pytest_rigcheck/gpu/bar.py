"""BAR sizes of each GPU, and whether BAR1 is large enough for peer-to-peer.

The kernel's ``resource`` file of a PCI function (``/sys/bus/pci/devices/BDF/resource``) has one line per
resource, ``start end flags`` in hex: lines 0-5 are the standard BARs, 6 the expansion ROM, the rest bridge
windows or SR-IOV BARs; an unassigned resource reads ``0x0 0x0 0x0`` (Documentation/PCI/sysfs-pci.rst,
drivers/pci/pci-sysfs.c ``resource_show``). A 64-bit BAR takes two registers, so its second line is empty.

NVIDIA names a GPU's memory BARs by register: BAR0 the registers, BAR1 the aperture that maps video memory
for the CPU and for peer GPUs, BAR3 a small one. BAR1 sits on line 1 when BAR0 is 32-bit (GeForce RTX 4090:
lines 0, 1, 3) and on line 2 when BAR0 is 64-bit (H100 and H200 in the shared captures: flag
IORESOURCE_MEM_64 on line 0). A BAR the kernel could not place reads zeros or carries IORESOURCE_UNSET. NVML reports BAR1's size too (``nvmlDeviceGetBAR1MemoryInfo().bar1Total``).

Without Resizable BAR the aperture stays at its legacy 256 MiB; the P2P path that maps a peer's memory
through BAR1 (tinygrad's P2P-enabled open kernel modules, tinygrad/open-gpu-kernel-modules#13) then fails.
The fix is in the BIOS: enable "Above 4G Decoding" and "Re-Size BAR Support" (NVIDIA, "GeForce RTX 30 Series
Resizable BAR Support", nvidia.com/en-us/geforce/news/geforce-rtx-30-series-resizable-bar-support/; board
vendors' manuals name the same two settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ProfileError, RigcheckError
from ..targets import GpuTarget
from ..verdict import Verdict, failed, not_applicable, passed, unreadable
from .common import label
from .state import (
    CORRUPT,
    F_BAR1_TOTAL,
    F_MEM_TOTAL,
    F_NVLINK,
    F_NVLINK_REMOTE,
    NOT_CAPTURED,
    GpuState,
    Unavailable,
)

if TYPE_CHECKING:
    from ..rig import Rig

IORESOURCE_MEM = 0x200  # include/linux/ioport.h
IORESOURCE_MEM_64 = 0x00100000
IORESOURCE_UNSET = 0x20000000  # no address assigned
IORESOURCE_DISABLED = 0x10000000
MIB = 1 << 20
GIB = 1 << 30
# Without VRAM to compare with, a BAR1 below this is the legacy window: smaller than any P2P-capable card's memory.
LEGACY_BAR1 = 1 * GIB
FIX = (
    'enable "Above 4G Decoding" and "Resizable BAR" (Re-Size BAR Support) in the BIOS, boot with CSM off (UEFI), '
    "and check `nvidia-smi -q -d MEMORY` shows a BAR1 total at least as large as the GPU's memory "
    "(NVIDIA: nvidia.com/en-us/geforce/news/geforce-rtx-30-series-resizable-bar-support/)"
)


@dataclass(frozen=True)
class Resource:
    line: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        """Bytes of address space assigned; 0 for an empty line or one the kernel left unassigned."""
        if self.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED) or self.end <= self.start:
            return 0
        return self.end - self.start + 1


def read_resources(rig: Rig, bdf: str) -> list[Resource] | Unavailable:
    """The lines of ``BDF/resource``, read through the rig's Source; absent or corrupt: ``Unavailable``."""
    fn = rig.pcie.functions.get(bdf)
    rel = f"{fn.base}/resource" if fn is not None else f"sys/bus/pci/devices/{bdf}/resource"
    try:
        text = rig.source.read_optional(rel)
    except RigcheckError as exc:
        return Unavailable(f"{rel}: {exc}")
    if text is None:
        return Unavailable(f"{rel}: not there (not captured)", NOT_CAPTURED)
    out = []
    for n, line in enumerate(text.splitlines()):
        parts = line.split()
        try:
            start, end, flags = (int(p, 16) for p in parts)
        except ValueError:
            return Unavailable(f"{rel}: corrupt line {n}: {line!r} (expected 'start end flags' in hex)")
        if end < start and (start or end):
            return Unavailable(f"{rel}: corrupt line {n}: end {end:#x} before start {start:#x}")
        out.append(Resource(n, start, end, flags))
    return out


def bar_sizes(resources: list[Resource]) -> list[int]:
    """Sizes in bytes of the assigned memory BARs among lines 0-5, in order (NVIDIA's BAR0, BAR1, BAR3)."""
    return [r.size for r in resources if r.line < 6 and r.flags & IORESOURCE_MEM and r.size]


def bar1_line(resources: list[Resource]) -> int:
    """The resource line of NVIDIA's BAR1: 2 after a 64-bit BAR0 (it takes two registers), else 1."""
    return 2 if resources and resources[0].flags & IORESOURCE_MEM_64 else 1


def bar1_bytes(
    rig: Rig, bdf: str, gpu: GpuState | Unavailable | None = None
) -> tuple[int, str] | Unavailable:
    """BAR1's size and where it was read: sysfs ``resource`` (the second memory BAR; 0 when the kernel left it
    unassigned), else, where the snapshot has no resource file, NVML's bar1Total. A corrupt file is returned
    as its ``Unavailable``, never papered over by the other source."""
    nv = gpu.get(F_BAR1_TOTAL) if isinstance(gpu, GpuState) else None
    if isinstance(nv, Unavailable) and nv.code == CORRUPT:
        return nv  # an impossible NVML reading is a corrupt record, whatever sysfs says
    res = read_resources(rig, bdf)
    if not isinstance(res, Unavailable):
        line = bar1_line(res)
        size = res[line].size if line < len(res) and res[line].flags & IORESOURCE_MEM else 0
        return size, f"sysfs {bdf}/resource line {line}"
    if res.code != NOT_CAPTURED:
        return res
    if isinstance(nv, int) and not isinstance(nv, bool) and nv > 0:
        return nv, "NVML bar1Total"
    return res


def _vram(gpu: GpuState | Unavailable | None) -> int | None:
    v = gpu.get(F_MEM_TOTAL) if isinstance(gpu, GpuState) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _size(b: int) -> str:
    """``256 MiB``, ``24 GiB``, ``31.5 GiB``: one decimal at most."""
    v, unit = (b / GIB, "GiB") if b >= GIB else (b / MIB, "MiB")
    return f"{v:.1f}".removesuffix(".0") + f" {unit}"


def _state_of(rig: Rig, bdf: str) -> GpuState | Unavailable | None:
    """This GPU's NVML state where the GPU plugin has opened NVML for the rig; None otherwise."""
    from .plugin import EXTRAS_KEY, GpuSession

    s = rig.extras.get(EXTRAS_KEY)
    if not isinstance(s, GpuSession):
        return None
    try:
        return s.gpu(bdf)
    except (RigcheckError, KeyError):
        return None


def bar1_small(rig: Rig, gpu: Any) -> str | None:
    """A hint for a P2P failure when ``gpu``'s BAR1 is far smaller than its memory; ``None`` otherwise.

    ``gpu``: a BDF, a ``PciFunction`` or a ``GpuTarget``. VRAM comes from NVML where the GPU plugin has
    read it; without it, a BAR1 under 1 GiB (the legacy 256 MiB window) counts as small.
    """
    bdf = gpu if isinstance(gpu, str) else getattr(getattr(gpu, "gpu", gpu), "bdf", None)
    if not isinstance(bdf, str):
        return None
    state = _state_of(rig, bdf)
    bar1 = bar1_bytes(rig, bdf, state)
    if isinstance(bar1, Unavailable):
        return None
    size, where = bar1
    vram = _vram(state)
    if (vram is not None and size >= vram) or (vram is None and size >= LEGACY_BAR1):
        return None
    of = f" for {_size(vram)} of VRAM" if vram else ""
    what = "not assigned" if size == 0 else _size(size)
    return f"{bdf}: BAR1 is {what} ({where}){of}: Resizable BAR is off, peers cannot map its memory; {FIX}"


def check(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """BAR1 at least as large as the GPU's memory on a rig that uses P2P (``[p2p] required``, default true).

    Not applicable: one GPU; ``[p2p] required = false``; peers reached over NVLink (an NVSwitch, every other
    GPU, an SXM board with its links up); a snapshot that kept neither the resource file nor NVML's BAR1 while
    the profile does not say ``[p2p] required`` (said true, that is UNREADABLE)."""
    name = label(t, gpu)
    n = len(t.rig.pcie.gpus)
    if n < 2:
        return not_applicable(f"{name}: one GPU: BAR1 size matters for peer-to-peer between GPUs")
    try:
        relied, why, said = p2p_relied(t.rig)
    except ProfileError as exc:
        return unreadable(f"{name}: profile error: {exc}")
    over = _nvlink_reaches_all(t, gpu)
    if over:
        return not_applicable(f"{name}: peer traffic goes over NVLink ({over}), not through BAR1")
    bar1 = bar1_bytes(t.rig, t.gpu.bdf, gpu)
    vram = _vram(gpu)
    if isinstance(bar1, Unavailable):
        if bar1.code == CORRUPT:
            return unreadable(
                f"{name}: BAR1 size unknown: {bar1}",
                fix=["capture again with `rigcheck capture DIR`"],
            )
        if not relied:
            return not_applicable(f"{name}: P2P not in use ({why}); BAR1 size not read: {bar1}")
        if not said and bar1.code == NOT_CAPTURED:
            # An older snapshot without the resource file: judged only where the profile asks for P2P.
            return not_applicable(
                f"{name}: BAR1 size not in this snapshot ({bar1}) and {why}: "
                "set [p2p] required = true to have it demanded"
            )
        return unreadable(
            f"{name}: BAR1 size unknown: {bar1}",
            fix=["capture again with `rigcheck capture DIR` (it keeps each GPU's sysfs resource file)"],
        )
    size, where = bar1
    props: dict[str, object] = {"bar1_bytes": size, "bar1_source": where}
    if vram is None and size >= LEGACY_BAR1 and relied:
        why_not = gpu if isinstance(gpu, Unavailable) else gpu.get(F_MEM_TOTAL)
        return unreadable(f"{name}: BAR1 {_size(size)} ({where}); GPU memory size unknown: {why_not}")
    props["vram_bytes"] = vram if vram is not None else "unknown"
    small = size < vram if vram is not None else size < LEGACY_BAR1
    measured = f"BAR1 {_size(size)} ({where})" + (f", VRAM {_size(vram)}" if vram else "")
    if not small:
        return passed(
            f"{name}: BAR1 {_size(size)} covers {'its ' + _size(vram) + ' of VRAM' if vram else 'the legacy window'}",
            measured=measured,
            measured_value=size,
            expected_value=vram,
            unit="bytes",
            properties=props,
        )
    if not relied:
        return not_applicable(f"{name}: {measured}, but P2P is not in use ({why})")
    if size == 0:
        return failed(
            f"{name}: BAR1 not assigned by the kernel (no address space for it): the GPU's memory cannot be mapped",
            measured=measured,
            measured_value=0,
            expected=f"BAR1 at least the GPU's memory ({why})",
            expected_value=vram if vram is not None else LEGACY_BAR1,
            unit="bytes",
            path=[t.rig.pcie.path_text(t.gpu.bdf)],
            fix=[FIX, "`sudo dmesg | grep -i 'BAR 1'` shows the kernel's 'no space' message"],
            properties=props,
        )
    cause = (
        "Resizable BAR is off"
        if size <= 2 * LEGACY_BAR1  # the legacy 256 MiB window (some boards give 512 MiB)
        else "Resizable BAR is on but sized below the memory (a BIOS or board limit on the BAR size)"
    )
    return failed(
        f"{name}: BAR1 {_size(size)} is far smaller than its {_size(vram) if vram else 'memory'}: {cause}, "
        "so peer GPUs cannot map all its memory and P2P fails",
        measured=measured,
        measured_value=size,
        expected=f"BAR1 at least the GPU's memory on a rig that uses P2P ({why})",
        expected_value=vram if vram is not None else LEGACY_BAR1,
        unit="bytes",
        path=[t.rig.pcie.path_text(t.gpu.bdf)],
        fix=[FIX],
        properties=props,
    )


def _nvlink_reaches_all(t: GpuTarget, gpu: GpuState | Unavailable) -> str:
    """How this GPU's active NVLinks reach every other GPU of the rig (an NVSwitch, each peer by address, or the
    one other GPU of a pair); "" where they do not, or NVML did not say."""
    if not isinstance(gpu, GpuState):
        return ""
    states, remote = gpu.get(F_NVLINK), gpu.get(F_NVLINK_REMOTE)
    if not isinstance(states, dict) or not states or not all(states.values()):
        return ""
    ends = [r for r in (remote.values() if isinstance(remote, dict) else []) if isinstance(r, dict)]
    if any(r.get("type") == "switch" for r in ends):
        return "an NVSwitch"
    from .health import is_sxm

    if gpu.name and is_sxm(gpu.name):
        return f"all {len(states)} links up on an SXM board ({gpu.name})"
    others = {g.bdf for g in t.rig.pcie.gpus} - {t.gpu.bdf}
    if others and others <= {str(r.get("bdf")) for r in ends}:
        return f"all {len(states)} links up to every other GPU"
    if len(others) == 1 and not ends:  # a pair: an active link can only reach the other GPU
        return f"all {len(states)} links up, a two-GPU rig"
    return ""


def p2p_relied(rig: Rig) -> tuple[bool, str, bool]:
    """Whether the rig uses P2P, where that comes from, and whether the profile said it: ``[p2p] required``
    (the P2P suites' default, true, when unsaid). Raises ``ProfileError`` for a bad ``[p2p]`` table."""
    from ..p2p.thresholds import p2p_required

    relied = p2p_required(rig)
    raw = rig.profile.raw.get("p2p", {})
    if isinstance(raw, dict) and "required" in raw:
        return relied, f"[p2p] required = {str(relied).lower()} in {rig.profile.source}", True
    return relied, "[p2p] required unsaid (the P2P suites' default: true)", False
