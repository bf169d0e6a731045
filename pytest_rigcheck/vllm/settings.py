"""The profile's ``[vllm]`` table and the ``--rig-vllm-*`` options, validated into one ``VllmSettings``.

Every bad value raises ``ProfileError`` naming the key, the value and what is allowed. The profile's
table is validated when the profile loads (``parse_vllm``, registered in ``profile.SECTION_PARSERS``),
the options at session start; either mistake is a ``pytest.UsageError`` before collection.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ..errors import ProfileError
from ..profile import DeviceKey, check_keys

# The default launch command (the "vllm serve MODEL --tensor-parallel-size N" plus flags);
# {flags} expands to the profile's flags plus the ones derived from its keys (max_model_len, ...).
DEFAULT_LAUNCH = (
    "vllm serve {model} --tensor-parallel-size {tensor_parallel_size} --host {host} --port {port} {flags}"
)
PLACEHOLDERS = (
    "model",
    "served_model_name",
    "tensor_parallel_size",
    "host",
    "port",
    "flags",
    "max_model_len",
    "gpu_memory_utilization",
)

_FLOAT_KEYS: dict[str, tuple[float, float, str]] = {
    # key: (low, high, unit) -- inclusive bounds
    "gpu_memory_utilization": (0.05, 1.0, "fraction"),
    "min_decode_tokens_per_s": (0.0, 1e6, "tokens/s"),
    "min_aggregate_tokens_per_s": (0.0, 1e7, "tokens/s"),
    "max_ttft_s": (0.0, 3600.0, "s"),
    "max_prefix_cached_ttft_ratio": (0.0, 1.0, "ratio"),
    "ready_timeout_s": (1.0, 86400.0, "s"),
    "request_timeout_s": (1.0, 3600.0, "s"),
    "stop_grace_s": (0.0, 600.0, "s"),
    "runtime_overhead_gib": (0.0, 64.0, "GiB"),
}
_INT_KEYS: dict[str, tuple[int, int]] = {
    "tensor_parallel_size": (1, 64),
    "max_model_len": (16, 10_000_000),
    "concurrency": (1, 1024),
    "decode_tokens": (2, 4096),
    "port": (1, 65535),
}
_STR_KEYS = (
    "model",
    "served_model_name",
    "launch",
    "url",
    "expect_version",
    "quantization",
    "kv_cache_dtype",
    "model_config",
    "model_preset",
)
_BOOL_KEYS = ("prefix_caching", "tool_calls")
_TABLE_KEYS = ("env", "gpus")
_LIST_KEYS = ("flags",)
KNOWN_KEYS = frozenset([*_FLOAT_KEYS, *_INT_KEYS, *_STR_KEYS, *_BOOL_KEYS, *_TABLE_KEYS, *_LIST_KEYS])


class GpuMemory(NamedTuple):
    """One GPU's memory as the model-fit gate reads it (from the profile, an option, or NVML); a plain
    ``(index, name, total_bytes, used_bytes)`` tuple converts with ``GpuMemory(*t)``."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the name the issue and NVML use
    name: str
    total_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class VllmSettings:
    """Everything the vLLM checks read, after validation. ``where`` says where it came from, for messages."""

    where: str = "no [vllm] table"
    url: str | None = None
    url_source: str = ""
    api_key_env: str = "RIGCHECK_VLLM_API_KEY"
    launch: str | None = None
    launch_source: str = ""
    model: str | None = None
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    port: int | None = None
    expect_version: str | None = None
    prefix_caching: bool | None = None
    tool_calls: bool | None = None  # None: checked where the server supports them, skipped where not
    concurrency: int = 4
    fit_concurrency: int | None = None  # [vllm] concurrency when given: the model-fit gate's stricter need
    decode_tokens: int = 64
    min_decode_tokens_per_s: float | None = None
    min_aggregate_tokens_per_s: float | None = None
    max_ttft_s: float | None = None
    max_prefix_cached_ttft_ratio: float = 0.8
    ready_timeout_s: float = 900.0
    # Per request: a server that gives no complete answer in this time is hung (found in seconds, said
    # while waiting), not waited on for minutes.
    request_timeout_s: float = 30.0
    stop_grace_s: float = 30.0
    # model-fit gate
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    model_config: str | None = None
    model_preset: str | None = None
    runtime_overhead_gib: float | None = None
    gpus: tuple[GpuMemory, ...] = ()
    gpus_source: str = ""  # "[vllm.gpus] in rig.toml", "--rig-vllm-gpu-memory": for the gate's messages
    gpu_tables: tuple[tuple[DeviceKey, GpuMemory], ...] = ()  # [vllm.gpus] as written, for profile.match_rig
    # profile.match_rig: [vllm.gpus] keys name GPUs of the rig, like [power.device.X]; a rig with no GPU
    # on its PCIe bus takes them as given (planning a fit for GPUs not in this machine).
    device_table: ClassVar[str] = "gpus"
    devices_without_gpus: ClassVar[bool] = True

    @property
    def devices(self) -> dict[DeviceKey, GpuMemory]:
        """``[vllm.gpus]`` by key, as ``profile.match_rig`` reads per-device tables."""
        return dict(self.gpu_tables)

    def match_rig_gpus(self, count: Callable[[], int], rig: str, where: str) -> None:
        """``profile.match_rig``'s check of ``tensor_parallel_size`` against the rig: vLLM needs that many
        GPUs and refuses to start with fewer, so a larger size than the rig's GPU count is a usage error
        (a rig showing no GPU is a machine planning a fit for GPUs not in it: not judged here).

        Args:
            count: the rig's GPU count on its PCIe bus, called only when ``tensor_parallel_size`` > 1.

        Raises:
            ProfileError: naming ``vllm.tensor_parallel_size`` and the rig's GPU count.
        """
        tp = self.tensor_parallel_size
        if tp <= 1:
            return
        n = count()
        if 0 < n < tp:
            raise ProfileError(
                where,
                "vllm.tensor_parallel_size",
                tp,
                f"at most the {n} GPU(s) {rig} shows on its PCIe bus: vLLM shards the model over "
                f"{tp} GPUs and cannot start with {n} (see `nvidia-smi -L`)",
            )

    @property
    def configured(self) -> bool:
        """Whether there is a server to check: a URL, or something to launch."""
        return bool(self.url or self.launch)

    @property
    def expected_model_id(self) -> str | None:
        """The id ``/v1/models`` should list: the served name, else the model (as vLLM does)."""
        return self.served_model_name or self.model

    @property
    def prefix_caching_enabled(self) -> bool | None:
        """``prefix_caching`` if set, else whether the flags enable or disable it, else unknown (None)."""
        if self.prefix_caching is not None:
            return self.prefix_caching
        on = self.flag("--enable-prefix-caching")
        return None if on is None else bool(on)

    def flag(self, name: str) -> Any:
        """The typed value of one of ``FLAGS`` in ``flags`` (``parse_flags``), ``None`` when not given.

        Example::

            >>> VllmSettings(flags=("--max_num_seqs=8",)).flag("--max-num-seqs")
            8
        """
        return parse_flags(self.flags, self.where).get(name)

    def launch_argv(self, host: str, port: int) -> list[str]:
        """The launch command, as argv: the template split like a shell would, then each word filled in.

        ``{flags}`` alone as a word expands to several words. The profile's keys become flags when
        the profile's ``flags`` do not already set them.

        Example::

            >>> s = VllmSettings(launch=DEFAULT_LAUNCH, model="m", max_model_len=4096)
            >>> " ".join(s.launch_argv("127.0.0.1", 8000))
            'vllm serve m --tensor-parallel-size 1 --host 127.0.0.1 --port 8000 --max-model-len 4096'
        """
        assert self.launch is not None
        flags = list(self.flags)
        derived = [
            ("--served-model-name", self.served_model_name),
            ("--max-model-len", self.max_model_len),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
        ]
        for flag, value in derived:
            if value is not None and not any(_canonical(f)[0] == flag for f in flags):
                flags += [flag, str(value)]
        values = {
            "model": self.model or "",
            "served_model_name": self.served_model_name or self.model or "",
            "tensor_parallel_size": str(self.tensor_parallel_size),
            "host": host,
            "port": str(port),
            "max_model_len": str(self.max_model_len or ""),
            "gpu_memory_utilization": str(self.gpu_memory_utilization or ""),
        }
        argv: list[str] = []
        for word in shlex.split(self.launch):
            if word == "{flags}":
                argv += flags
            else:
                argv.append(word.replace("{flags}", shlex.join(flags)).format_map(values))
        return argv


# -- the vLLM flags rigcheck reads ------------------------------------------------------------------
# vLLM's --kv-cache-dtype choices (vllm/config/cache.py CacheDType; 0.6: auto, fp8, fp8_e5m2, fp8_e4m3).
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")
_BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


class Flag(NamedTuple):
    """A vLLM flag rigcheck reads from ``[vllm] flags``: ``kind`` is ``int`` (a whole number >= 1),
    ``tokens`` (the same, or vLLM's human-readable ``32k``/``32K``), ``fraction`` (above 0, at most 1),
    ``choice``, ``text``, ``switch`` (no value; ``--no-X`` turns it off); ``key`` is the ``[vllm]`` key
    saying the same thing, if any."""

    kind: str
    allowed: str
    key: str | None = None


# What vLLM accepts for each (vllm/engine/arg_utils.py EngineArgs.add_cli_args; the ranges from
# vllm/config: CacheConfig gpu_memory_utilization in (0, 1], SchedulerConfig/ParallelConfig sizes >= 1).
FLAGS: dict[str, Flag] = {
    "--tensor-parallel-size": Flag("int", "a whole number of GPUs, 1 or more", "tensor_parallel_size"),
    "--max-model-len": Flag(
        "tokens", "a whole number of tokens, 1 or more (or vLLM's 32k = 32000, 32K = 32768)", "max_model_len"
    ),
    "--gpu-memory-utilization": Flag(
        "fraction", "a fraction of each GPU's memory above 0 and at most 1", "gpu_memory_utilization"
    ),
    "--max-num-seqs": Flag("int", "a whole number of sequences, 1 or more"),
    "--max-num-batched-tokens": Flag("int", "a whole number of tokens, 1 or more"),
    "--kv-cache-dtype": Flag("choice", "one of " + ", ".join(KV_CACHE_DTYPES), "kv_cache_dtype"),
    "--quantization": Flag("text", "a quantization method, e.g. awq or fp8", "quantization"),
    "--enable-chunked-prefill": Flag("switch", "no value (or =true/=false)"),
    "--enforce-eager": Flag("switch", "no value (or =true/=false)"),
    "--enable-prefix-caching": Flag("switch", "no value (or =true/=false)", "prefix_caching"),
    "--port": Flag("text", "a port number"),
    "--host": Flag("text", "a host address"),
}
_SHORT = {"-tp": "--tensor-parallel-size", "-q": "--quantization"}  # vLLM's short aliases
# Real vLLM flags close in spelling to one of FLAGS: never taken for a typo of it.
_NOT_TYPOS = frozenset(
    (
        "--data-parallel-size",
        "--pipeline-parallel-size",
        "--max-num-prefill-seqs",
        "--kv-cache-memory",
        "--ports",
    )
)


def _canonical(word: str) -> tuple[str, str | None]:
    """``(flag, value after '=' or None)``, with vLLM's spelling rules: ``--max_num_seqs`` is
    ``--max-num-seqs`` (vLLM's FlexibleArgumentParser turns underscores into dashes), ``-tp`` is
    ``--tensor-parallel-size``."""
    name, eq, value = word.partition("=")
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    name = _SHORT.get(name, name)
    return name, (value if eq else None)


def _typed(flag: str, rule: Flag, text: str) -> object:
    """``text`` as ``flag`` takes it, ``ValueError`` when vLLM would refuse it."""
    if rule.kind in ("int", "tokens"):
        m = (
            re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt])", text.strip(), re.IGNORECASE)
            if rule.kind == "tokens"
            else None
        )
        if m:  # vLLM's human_readable_int: k/m/g/t decimal (1e3...), K/M/G/T binary (whole numbers only)
            number, unit = m.groups()
            power = "kmgt".index(unit.lower()) + 1
            if unit.isupper() and "." in number:
                raise ValueError
            n = int(float(number) * (1000 if unit.islower() else 1024) ** power)
        else:
            n = int(text.strip())
        if n < 1:
            raise ValueError
        return n
    if rule.kind == "fraction":
        x = float(text)
        if not (math.isfinite(x) and 0 < x <= 1):
            raise ValueError
        return x
    if rule.kind == "choice":
        if text not in KV_CACHE_DTYPES:
            raise ValueError
        return text
    if not text.strip():
        raise ValueError
    return text


def _written(name: str, value: object) -> str:
    """A typed flag as a command line says it: ``--max-num-seqs 8``, ``--no-enable-prefix-caching``."""
    if value is True:
        return name
    if value is False:
        return "--no-" + name[2:]
    return f"{name} {value}"


def parse_flags(flags: Sequence[str], where: str) -> dict[str, object]:
    """The flags rigcheck reads from ``[vllm] flags``, typed: ``{"--max-num-seqs": 64, ...}``; a switch
    as ``True``/``False`` under its ``--enable-X`` name (``--no-enable-X`` is ``False``). Other flags
    pass through unread (vLLM has hundreds).

    Example::

        >>> parse_flags(["--max_num_seqs", "64", "--no-enable-chunked-prefill", "--seed", "1"], "rig.toml")
        {'--max-num-seqs': 64, '--enable-chunked-prefill': False}

    Raises:
        ProfileError: (key ``vllm.flags``) a value vLLM refuses (wrong type, out of range), a missing
            value, a flag given twice with different values (or a switch both on and off), or an
            unknown flag spelled like one of ``FLAGS`` (``--max-num-seq``: did you mean ``--max-num-seqs``?),
            which rigcheck would not read and the model-fit gate would size without.
    """
    import difflib

    out: dict[str, object] = {}
    said: dict[str, str] = {}
    i = 0
    while i < len(flags):
        word = flags[i]
        i += 1
        if not word.startswith("-"):
            continue  # a value of a flag rigcheck does not read
        name, value = _canonical(word)
        off = (
            name.startswith("--no-") and "--" + name[5:] in FLAGS and FLAGS["--" + name[5:]].kind == "switch"
        )
        if off:
            name = "--" + name[5:]
        rule = FLAGS.get(name)
        if rule is None:
            close = difflib.get_close_matches(
                name, [f for f in FLAGS if f not in ("--port", "--host")], 1, 0.85
            )
            if close and name.startswith("--") and name not in _NOT_TYPOS:
                raise ProfileError(
                    where,
                    "vllm.flags",
                    word,
                    f"not one of vLLM's flags (did you mean {close[0]}?): rigcheck would not read it, and the model-fit "
                    f"gate would size the server without it",
                )
            continue
        if rule.kind == "switch":
            if value is None:
                typed: object = not off
            elif not off and value.strip().lower() in _BOOL_WORDS:
                typed = _BOOL_WORDS[value.strip().lower()]
            else:
                raise ProfileError(where, "vllm.flags", word, f"{name} takes {rule.allowed}")
        else:
            if value is None:
                if i >= len(flags) or flags[i].startswith("--"):
                    raise ProfileError(where, "vllm.flags", word, f"{name} needs a value: {rule.allowed}")
                value, word = flags[i], f"{word} {flags[i]}"
                i += 1
            try:
                typed = _typed(name, rule, value)
            except ValueError:
                raise ProfileError(where, "vllm.flags", word, f"{name} takes {rule.allowed}") from None
        if name in out and out[name] != typed:
            raise ProfileError(
                where, "vllm.flags", word, f"contradicts {said[name]!r} given before it: keep one"
            )
        out[name], said[name] = typed, word
    return out


def _check_template(where: str, key: str, template: str) -> None:
    import string

    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        shlex.split(template)
    except ValueError as exc:
        raise ProfileError(where, key, template, f"a command line with {{placeholders}} ({exc})") from None
    bad = [n for n in names if n not in PLACEHOLDERS]
    if bad:
        raise ProfileError(
            where,
            key,
            template,
            f"unknown placeholder {{{bad[0]}}}; known: " + ", ".join("{" + p + "}" for p in PLACEHOLDERS),
        )


def parse_vllm_table(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a ``[vllm]`` table; return keyword arguments for ``VllmSettings``.

    Example::

        >>> parse_vllm_table({"model": "m", "tensor_parallel_size": 2}, "rig.toml")["tensor_parallel_size"]
        2
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = f"vllm.{key}"
        if key not in KNOWN_KEYS:
            raise ProfileError(
                where, k, value, "unknown key; keys of [vllm] are " + ", ".join(sorted(KNOWN_KEYS))
            )
        if key in _FLOAT_KEYS:
            lo, hi, unit = _FLOAT_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                raise ProfileError(where, k, value, f"a number from {lo:g} to {hi:g} ({unit})")
            out[key] = float(value)
        elif key in _INT_KEYS:
            lo_i, hi_i = _INT_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not lo_i <= value <= hi_i:
                raise ProfileError(where, k, value, f"a whole number from {lo_i} to {hi_i}")
            out[key] = value
            if key == "concurrency":
                out["fit_concurrency"] = value
        elif key in _STR_KEYS:
            if not isinstance(value, str) or not value.strip():
                raise ProfileError(where, k, value, "a non-empty string")
            if key == "model_preset":
                _check_preset(where, value)
            elif key == "expect_version" and not re.fullmatch(r"\d+\.\d+[0-9A-Za-z.+-]*", value.strip()):
                # compared with GET /version as it answers (0.6.4.post1) and read by the gate as major.minor
                raise ProfileError(
                    where, k, value, "a vLLM version as GET /version answers it, e.g. 0.6.4.post1"
                )
            elif key == "kv_cache_dtype" and value not in KV_CACHE_DTYPES:
                raise ProfileError(where, k, value, f"{FLAGS['--kv-cache-dtype'].allowed} (vLLM's choices)")
            out[key] = value
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ProfileError(where, k, value, "true or false")
            out[key] = value
        elif key == "flags":
            if isinstance(value, str):
                try:
                    value = shlex.split(value)
                except ValueError as exc:  # an unbalanced quote: shlex's "No closing quotation"
                    raise ProfileError(
                        where, k, value, f"command-line flags as a shell would split them ({exc})"
                    ) from None
            if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
                raise ProfileError(where, k, value, 'a list of strings, e.g. ["--enable-prefix-caching"]')
            out[key] = tuple(value)
        elif key == "env":
            if not isinstance(value, dict) or not all(
                isinstance(v, str | int | float) and not isinstance(v, bool) and a and "=" not in a
                for a, v in value.items()
            ):
                raise ProfileError(
                    where,
                    k,
                    value,
                    'a table of variable names to strings or numbers, e.g. {VLLM_CPU_OMP_THREADS_BIND = "0|1"}',
                )
            out[key] = {str(a): str(b) for a, b in value.items()}
        elif key == "gpus":
            out["gpu_tables"] = gpu_tables(value, where)
            out[key] = tuple(sorted((g for _, g in out["gpu_tables"] if g.index >= 0), key=lambda g: g.index))
            out["gpus_source"] = f"[vllm.gpus] in {where}"
    _check_combinations(raw, out, where)
    _check_model_files(out, where)
    if "launch" in out:
        _check_template(where, "vllm.launch", out["launch"])
        if "{port}" not in out["launch"] and "port" not in out:
            raise ProfileError(
                where,
                "vllm.launch",
                out["launch"],
                "a template with {port} (the port rigcheck picks), or set vllm.port to the fixed port",
            )
    return out


def parse_vllm(table: dict[str, Any], where: str) -> VllmSettings:
    """The ``[vllm]`` section as the profile loader validates it (``profile.SECTION_PARSERS``): the
    settings the profile alone gives. The plugin adds the ``--rig-vllm-*`` options to the same table.

    Raises:
        ProfileError: as ``parse_vllm_table``.
    """
    return VllmSettings(where=where, **parse_vllm_table(table, where))


GPU_KEYS = ("name", "total_gib", "used_gib")


def parse_gpu_table(value: object, where: str) -> tuple[GpuMemory, ...]:
    """``[vllm.gpus]``: ``"0" = {name = "RTX 3080", total_gib = 10, used_gib = 1.2}``, one entry per GPU.

    The key names the GPU as the profile's other per-device tables do (``profile.DeviceKey``): its index
    (nvidia-smi's, PCI bus order), PCI address or slot name. Entries keyed by index are returned (by index);
    those keyed by address or slot get their index when matched to the rig (``place_gpus``); all of them
    are in ``VllmSettings.gpu_tables``.

    Raises:
        ProfileError: not a table of tables, an unknown key in an entry (``name``, ``total_gib``,
            ``used_gib``), missing figures, impossible figures, or two keys naming one GPU the same way.
    """
    return tuple(sorted((g for _, g in gpu_tables(value, where) if g.index >= 0), key=lambda g: g.index))


def gpu_tables(value: object, where: str) -> tuple[tuple[DeviceKey, GpuMemory], ...]:
    """``[vllm.gpus]`` as ``(key, figures)`` pairs in the profile's order; index -1 for an address or
    slot key (not known before the rig is read). Raises ``ProfileError`` as ``parse_gpu_table``."""
    if not isinstance(value, dict):
        raise ProfileError(
            where, "vllm.gpus", value, 'a table: "0" = {name = "...", total_gib = 10, used_gib = 1.2}'
        )
    out: list[tuple[DeviceKey, GpuMemory]] = []
    for text, entry in value.items():
        k = f'vllm.gpus."{text}"'
        if not str(text).strip():
            raise ProfileError(
                where, k, entry, "a GPU index (0, 1, ...), a PCI address or a slot name as the key"
            )
        if not isinstance(entry, dict):
            raise ProfileError(where, k, entry, "a table with total_gib and used_gib (and optional name)")
        check_keys(where, k, entry, GPU_KEYS)
        if not {"total_gib", "used_gib"} <= set(entry):
            raise ProfileError(where, k, entry, "a table with total_gib and used_gib (and optional name)")
        total, used = entry["total_gib"], entry["used_gib"]
        if (
            not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
                for x in (total, used)
            )
            or used > total
            or total <= 0
        ):
            raise ProfileError(where, k, entry, "total_gib > 0 and 0 <= used_gib <= total_gib (GiB)")
        name = entry.get("name", "")
        if not isinstance(name, str):
            raise ProfileError(where, f"{k}.name", name, 'a string, e.g. "RTX 3090"')
        key = DeviceKey.parse(str(text))
        twin = next((t for t, _ in out if (t.kind, t.value) == (key.kind, key.value)), None)
        if twin is not None:
            raise ProfileError(where, k, entry, f'names the same GPU as "{twin.text}": keep one')
        index = int(key.value) if key.kind == "index" else -1
        out.append(
            (
                key,
                GpuMemory(
                    index,
                    name.strip() or (f"GPU{key.value}" if key.kind == "index" else str(text)),
                    int(total * 2**30),
                    int(used * 2**30),
                ),
            )
        )
    return tuple(out)


def place_gpus(
    given: Sequence[tuple[DeviceKey, GpuMemory]],
    rig_gpus: Sequence[tuple[str, str | None]],
    where: str,
    key: str,
    rig: str,
) -> tuple[GpuMemory, ...]:
    """The given figures on the rig's GPUs: each key matched to one GPU, its index set to that GPU's.

    Args:
        given: ``(key, figures)`` pairs, from ``gpu_tables`` or the option (index keys).
        rig_gpus: the rig's GPUs as ``(bdf, slot)``, in PCI bus order (nvidia-smi's index order).
            Empty: a machine without GPUs, planning a fit; index keys are then taken as given (the gate
            says the figures are not the rig's) and an address or slot key matches nothing.
        where, key: the file or option and the key, for the error.
        rig: the rig's name, for the error.

    Raises:
        ProfileError: a key names no GPU of the rig (listing the ones it has), or two keys name one GPU.
    """
    out: dict[int, tuple[DeviceKey, GpuMemory]] = {}
    for dk, mem in given:
        if not rig_gpus:
            if dk.kind != "index":
                raise ProfileError(
                    where,
                    key,
                    dk.text,
                    f"{rig} shows no GPU on its PCIe bus, so a PCI address or slot name names nothing; "
                    "key the figures by GPU index (0, 1, ...) to plan a fit for GPUs not here",
                )
            hit = [mem.index]
        else:
            hit = [i for i, (bdf, slot) in enumerate(rig_gpus) if dk.matches(bdf, i, slot)]
        if not hit:
            has = ", ".join(
                f"{bdf} (GPU{i}{', slot ' + slot if slot else ''})" for i, (bdf, slot) in enumerate(rig_gpus)
            )
            what = {"index": f"GPU{dk.value} does not exist", "bdf": "no GPU has this PCI address"}
            raise ProfileError(
                where,
                key,
                dk.text,
                f"{what.get(dk.kind, 'no GPU is in this slot')} on {rig}: its GPUs are {has} (nvidia-smi order)",
            )
        i = hit[0]
        if i in out:
            raise ProfileError(where, key, dk.text, f'names GPU{i}, as "{out[i][0].text}" does: keep one')
        out[i] = (dk, mem._replace(index=i))
    return tuple(m for _, (_, m) in sorted(out.items()))


_UNITS = {"": 2**30, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_size(text: str) -> int:
    """A memory size: ``10GiB``, ``9216MiB``, ``10GB``, or a bare number of GiB.

    Example::

        >>> parse_size("1.5GiB"), parse_size("512 MiB")
        (1610612736, 536870912)
    """
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size: use e.g. 10GiB, 9216MiB, 10GB or a bare number of GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_url(text: Any) -> str:
    """A server's base URL (``http://127.0.0.1:8000``); ``ValueError`` saying what is wrong with it."""
    from .client import OpenAIClient

    url = str(text).strip()
    OpenAIClient(url)  # ValueError saying what is wrong with it
    return url


def parse_gpu_option(text: str) -> GpuMemory:
    """``--rig-vllm-gpu-memory INDEX:NAME:TOTAL:USED``, for instance ``0:RTX 3080:10GiB:1.2GiB``.

    Example::

        >>> parse_gpu_option("0:RTX 3080:10GiB:1GiB").used_bytes
        1073741824
    """
    parts = text.split(":")
    if len(parts) != 4 or not parts[0].strip().isdigit():
        raise ValueError(f"{text!r}: use INDEX:NAME:TOTAL:USED, e.g. 0:RTX 3080:10GiB:1.2GiB")
    total, used = parse_size(parts[2]), parse_size(parts[3])
    if used > total or total <= 0:
        raise ValueError(f"{text!r}: used ({parts[3]}) must be at most total ({parts[2]}), total above 0")
    return GpuMemory(int(parts[0]), parts[1].strip() or f"GPU{parts[0]}", total, used)


def parse_gpu_options(specs: Sequence[str]) -> tuple[tuple[DeviceKey, GpuMemory], ...]:
    """``--rig-vllm-gpu-memory`` given once or more: ``(key, figures)`` pairs as ``gpu_tables`` gives,
    each key an index whose ``text`` is the spec as written (for ``place_gpus``' errors).
    ``ValueError`` as ``parse_gpu_option``."""
    out = []
    for spec in specs:
        g = parse_gpu_option(spec)
        out.append((DeviceKey(spec, "index", str(g.index)), g))
    return tuple(out)


def _check_preset(where: str, value: str) -> None:
    """``model_preset`` names a preset (``fit.PRESETS``, by name or Hugging Face id), else ProfileError
    listing them, with the closest as a did-you-mean."""
    import difflib

    from .fit import PRESETS, find_preset  # fit imports this module: imported here, when called

    if find_preset(value) is None:
        names = sorted(PRESETS)
        close = difflib.get_close_matches(value.strip().lower().rsplit("/", 1)[-1], names, 1, 0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ProfileError(
            where, "vllm.model_preset", value, f"no such preset; {hint}presets: {', '.join(names)}"
        )


def _check_model_files(out: dict[str, Any], where: str) -> None:
    """``model_config`` names a regular file (a config.json, or a folder holding one), looked at with
    ``stat`` only (never opened here: a FIFO would block); ``quantization`` (the key or the flag) is a
    weight scheme the fit knows (``fit.WEIGHT_BYTES``). ``ProfileError`` naming the key otherwise."""
    import os
    import stat

    from .fit import WEIGHT_BYTES  # fit imports this module: imported here, when called

    q = out.get("quantization")
    if isinstance(q, str) and q.lower() not in WEIGHT_BYTES:
        raise ProfileError(
            where,
            "vllm.quantization",
            q,
            f"a weight dtype or quantization the model-fit gate can size: {', '.join(sorted(WEIGHT_BYTES))}",
        )
    path = out.get("model_config")
    if not path:
        return
    target = os.path.expanduser(path)
    try:
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            target = os.path.join(target, "config.json")
            st = os.stat(target)
        why = (
            ""
            if stat.S_ISREG(st.st_mode)
            else "not a regular file (a FIFO, device or socket is never opened)"
        )
    except OSError as exc:
        why = f"{target}: {exc.strerror or exc}"
    if why:
        raise ProfileError(
            where, "vllm.model_config", path, f"a model's config.json (or its folder) on this machine; {why}"
        )


def _check_combinations(raw: dict[str, Any], out: dict[str, Any], where: str) -> None:
    """The ``[vllm]`` values against each other and the flags: a flag saying what a key says must agree
    with it (and fills it in when the key is absent, so the gate sizes what vLLM is started with); and
    the combinations vLLM or rigcheck cannot honour. ``ProfileError`` naming the keys and values."""
    if "model_config" in out and "model_preset" in out:
        raise ProfileError(
            where,
            "vllm.model_preset",
            out["model_preset"],
            f"model_config ({out['model_config']!r}) is set too, and it alone would be sized: keep one",
        )
    flags = parse_flags(out.get("flags", ()), where)
    for name, rule in FLAGS.items():
        if rule.key is None or name not in flags:
            continue
        given = flags[name]
        if rule.key in out and out[rule.key] != given:
            raise ProfileError(
                where,
                "vllm.flags",
                _written(name, given),
                f"contradicts vllm.{rule.key} = {out[rule.key]!r}: vLLM would be started with the flag; keep one",
            )
        if rule.key != "prefix_caching":
            out.setdefault(rule.key, given)
    tokens, seqs = flags.get("--max-num-batched-tokens"), flags.get("--max-num-seqs")
    if isinstance(tokens, int) and isinstance(seqs, int) and tokens < seqs:
        # vllm/config SchedulerConfig._verify_args refuses to start.
        raise ProfileError(
            where,
            "vllm.flags",
            f"--max-num-batched-tokens {tokens}",
            f"at least --max-num-seqs ({seqs}): vLLM refuses to start with fewer tokens than sequences per batch",
        )
    if isinstance(seqs, int) and out.get("concurrency", 0) > seqs:
        raise ProfileError(
            where,
            "vllm.concurrency",
            out["concurrency"],
            f"at most --max-num-seqs ({seqs}) in flags: vLLM runs no more sequences at once",
        )
    if out.get("flags") and "launch" in out and "{flags}" not in out["launch"]:
        raise ProfileError(
            where,
            "vllm.flags",
            " ".join(out["flags"]),
            "a launch command with {flags}: vllm.launch has none, so these would never reach vLLM",
        )
    length = out.get("max_model_len")
    if (
        flags.get("--enable-chunked-prefill") is False
        and isinstance(tokens, int)
        and length
        and tokens < length
    ):
        raise ProfileError(
            where,
            "vllm.flags",
            f"--max-num-batched-tokens {tokens}",
            f"at least max_model_len ({length}) without chunked prefill: vLLM refuses to start "
            "(SchedulerConfig); raise it, lower max_model_len, or enable chunked prefill",
        )
    if length and out.get("decode_tokens", 0) >= length:
        raise ProfileError(
            where,
            "vllm.decode_tokens",
            out["decode_tokens"],
            f"fewer than max_model_len ({length}): a prompt and that many new tokens must fit in the context",
        )
    if "url" not in raw:
        for name, placeholder in (("--port", "{port}"), ("--host", "{host}")):
            if name in flags and placeholder in out.get("launch", DEFAULT_LAUNCH):
                raise ProfileError(
                    where,
                    "vllm.flags",
                    f"{name} {flags[name]}",
                    f"the launch command already passes {name} {placeholder} (rigcheck picks it and waits "
                    f"there); drop it from flags"
                    + (", or set vllm.port to fix the port" if name == "--port" else ""),
                )
