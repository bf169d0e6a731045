"""The model-fit gate's local files and profile values as a fresh user got them wrong: a FIFO named as
``model_config`` or as ``model.safetensors`` (opened, the run hung), a missing ``model_config`` (a raw
``[Errno 2]`` late), impossible architecture numbers in config.json (ZeroDivisionError, "-5.93B params"),
an unknown ``quantization`` and a ``tensor_parallel_size`` above the rig's GPU count (a self-contradictory
"does NOT fit ... 41x"). Each is one usage error (exit 4) at load, or one UNREADABLE verdict naming the
file, field and value; never a traceback or a hang."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.verdict import Status
from pytest_rigcheck.vllm import fitcheck
from pytest_rigcheck.vllm.fit import load_spec, spec_from_config
from pytest_rigcheck.vllm.modeldir import model_weights, read_header
from pytest_rigcheck.vllm.settings import GpuMemory, parse_vllm

from .conftest import FIT

CASE04 = Path(__file__).parents[1] / "data" / "case04-kv-fit-one-sequence"

# Llama-3.1-8B's config.json shape (meta-llama/Llama-3.1-8B-Instruct on the Hugging Face hub).
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
}
RTX3090 = GpuMemory(0, "RTX 3090", int(23.58 * 2**30), 0)


def safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A safetensors file with these tensors' headers and zero data."""
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def model_dir(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**LLAMA, **changes}))
    return folder


class TestNothingButRegularFilesIsOpened:
    def test_fifo_config_is_refused_not_opened(self, tmp_path):
        """Was: ``read_text`` on the FIFO blocked the run forever."""
        folder = tmp_path / "model"
        folder.mkdir()
        os.mkfifo(folder / "config.json")
        with pytest.raises(
            ValueError, match=r"config\.json: a FIFO \(named pipe\), not a regular file: refused"
        ):
            load_spec("m", str(folder / "config.json"))

    def test_fifo_weights_are_unreadable_not_passed_over(self, tmp_path):
        """Was: the FIFO ``model.safetensors`` was skipped and the fit used the config.json estimate with no
        word that the weights were not read. What is on disk decides the fit: UNREADABLE naming the file."""
        folder = model_dir(tmp_path)
        os.mkfifo(folder / "model.safetensors")
        with pytest.raises(ValueError, match=r"weights not read: .*model\.safetensors: a FIFO.*refused"):
            model_weights(folder)
        s = parse_vllm({"model": "m", "model_config": str(folder / "config.json")}, "rig.toml")
        v = fitcheck.memory_fit(s, [RTX3090], "given")
        assert v.status == Status.UNREADABLE, str(v)
        assert "model.safetensors" in v.summary and "not a regular file" in v.summary

    def test_fifo_shard_with_index_total_size_says_so(self, tmp_path):
        """With the index's ``metadata.total_size`` the weights come from there, and the source says the
        header could not be read."""
        folder = model_dir(tmp_path)
        os.mkfifo(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(
            json.dumps(
                {
                    "metadata": {"total_size": 16060522496},
                    "weight_map": {"x": "model-00001-of-00001.safetensors"},
                }
            )
        )
        w = model_weights(folder)
        assert w is not None and w.bytes == 16060522496
        assert "metadata.total_size" in w.source and "not a regular file" in w.source

    def test_regular_weights_are_read(self, tmp_path):
        folder = model_dir(tmp_path)
        safetensors(folder / "model.safetensors", {"w": ("BF16", [4, 4], 32)})
        w = model_weights(folder)
        assert w is not None and w.bytes == 32 and w.elements == 16
        assert read_header(folder / "model.safetensors")["w"]["shape"] == [4, 4]

    @pytest.mark.parametrize(
        "entry",
        [
            {"dtype": "BF16", "shape": "4x4", "data_offsets": [0, 32]},
            {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0]},
            {"dtype": "BF16", "shape": [-4, 4], "data_offsets": [0, 32]},
        ],
        ids=["shape-text", "one-offset", "negative-dim"],
    )
    def test_corrupt_header_entry_is_one_line(self, tmp_path, entry):
        raw = json.dumps({"w": entry}).encode()
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 32)
        (tmp_path / "config.json").write_text(json.dumps(LLAMA))
        with pytest.raises(ValueError, match="corrupt"):
            model_weights(tmp_path)


class TestArchitectureNumbers:
    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("num_attention_heads", 0),
            ("num_hidden_layers", -5),
            ("hidden_size", -4096),
            ("num_key_value_heads", 0),
            ("num_key_value_heads", -8),
            ("num_key_value_heads", 5),
            ("head_dim", 0),
            ("vocab_size", 0),
            ("intermediate_size", -1),
            ("max_position_embeddings", 0),
            ("num_hidden_layers", 32.5),
            ("num_attention_heads", True),
            ("num_hidden_layers", "32"),
            ("sliding_window_pattern", -2),
        ],
    )
    def test_impossible_value_is_unreadable_naming_file_field_value(self, tmp_path, key, value):
        """Was: ZeroDivisionError for 0 heads; "-5.93B params" and a negative KV cache for -5 layers."""
        folder = model_dir(tmp_path, **{key: value})
        s = parse_vllm({"model": "m", "model_config": str(folder)}, "rig.toml")
        v = fitcheck.memory_fit(s, [RTX3090], "given")
        assert v.status == Status.UNREADABLE, str(v)
        assert str(folder / "config.json") in v.summary and f"{key} = {value!r}" in v.summary
        assert fitcheck.tp_shape(s).status == Status.UNREADABLE

    def test_zero_shared_experts_and_dense_layers_are_allowed(self):
        spec = spec_from_config({**LLAMA, "first_k_dense_replace": 0, "n_shared_experts": 0}, "m")
        assert spec.layers == 32 and spec.kv_heads == 8 and spec.params > 0


class TestProfileValues:
    @pytest.mark.parametrize(
        ("table", "key", "said"),
        [
            ({"model_config": "/nonexistent/config.json"}, "vllm.model_config", "No such file"),
            ({"quantization": "magic"}, "vllm.quantization", "awq"),
            ({"flags": ["--quantization", "magic"]}, "vllm.quantization", "fp8"),
        ],
        ids=["missing-config", "unknown-quantization", "unknown-quantization-flag"],
    )
    def test_rejected_at_load(self, table, key, said):
        with pytest.raises(ProfileError) as exc:
            parse_vllm({"model": "m", **table}, "rig.toml")
        assert exc.value.key == key and said in str(exc.value)

    def test_fifo_model_config_rejected_without_opening(self, tmp_path):
        os.mkfifo(tmp_path / "config.json")
        with pytest.raises(ProfileError, match="not a regular file"):
            parse_vllm({"model_config": str(tmp_path / "config.json")}, "rig.toml")
        with pytest.raises(ProfileError, match="not a regular file"):
            parse_vllm({"model_config": str(tmp_path)}, "rig.toml")  # the folder's config.json

    def test_known_quantization_and_folder_config_load(self, tmp_path):
        folder = model_dir(tmp_path)
        s = parse_vllm({"model_config": str(folder), "quantization": "fp8"}, "rig.toml")
        assert s.quantization == "fp8"

    def test_tp_above_the_rigs_gpus(self):
        s = parse_vllm({"model": "m", "tensor_parallel_size": 8}, "rig.toml")
        with pytest.raises(ProfileError) as exc:
            s.match_rig_gpus(lambda: 4, "rig4", "rig.toml")
        assert exc.value.key == "vllm.tensor_parallel_size" and "4 GPU(s) rig4 shows" in str(exc.value)
        s.match_rig_gpus(lambda: 8, "rig8", "rig.toml")
        s.match_rig_gpus(lambda: 0, "planner", "rig.toml")  # no GPU here: planning, not judged


def run(pytester: pytest.Pytester, profile: Path) -> pytest.RunResult:
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-rA", "--rig", "--rig-snapshot", str(CASE04 / "snapshot"),
        "--rig-profile", str(profile), str(FIT),
    )  # fmt: skip


class TestEndToEnd:
    """Case 04's one-GPU rig (tests/data/case04-kv-fit-one-sequence, from vllm-project/vllm#10517) with the
    fresh user's mistakes: one line, exit 4, or an UNREADABLE verdict; never a traceback or a hang."""

    @staticmethod
    def profile(tmp_path: Path, extra: str) -> Path:
        text = (CASE04 / "profile-20k.toml").read_text().replace("[vllm]\n", f"[vllm]\n{extra}\n", 1)
        path = tmp_path / "rig.toml"
        path.write_text(text)
        return path

    @pytest.mark.parametrize(
        ("extra", "said"),
        [
            ("tensor_parallel_size = 2", "*'vllm.tensor_parallel_size': at most the 1 GPU(s)*"),
            ('quantization = "magic"', "*invalid value 'magic' for 'vllm.quantization'*"),
            ('model_config = "/nonexistent/config.json"', "*'vllm.model_config'*No such file*"),
            ('model_config = "FIFO"', "*'vllm.model_config'*not a regular file*"),
        ],
        ids=["tp-2-on-1-gpu", "quantization-magic", "missing-config", "fifo-config"],
    )
    def test_usage_error(self, pytester, tmp_path, extra, said):
        fifo = tmp_path / "fifo-config.json"
        os.mkfifo(fifo)
        result = run(pytester, self.profile(tmp_path, extra.replace('"FIFO"', json.dumps(str(fifo)))))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {said}"])
        assert "Traceback" not in result.stderr.str() + result.stdout.str()

    def test_fifo_weights_unreadable(self, pytester, tmp_path):
        folder = model_dir(tmp_path)
        os.mkfifo(folder / "model.safetensors")
        result = run(pytester, self.profile(tmp_path, f"model_config = {json.dumps(str(folder))}"))
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert "model.safetensors" in result.stdout.str() and "Traceback" not in result.stdout.str()

    def test_zero_heads_unreadable(self, pytester, tmp_path):
        folder = model_dir(tmp_path, num_attention_heads=0)
        result = run(pytester, self.profile(tmp_path, f"model_config = {json.dumps(str(folder))}"))
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*num_attention_heads = 0 is impossible*"])
        assert "ZeroDivisionError" not in result.stdout.str()
