"""End-to-end checks of an OpenAI-compatible (vLLM) server, and the model-fit gate.

Nothing heavy is imported here: ``pytest_rigcheck.vllm.plugin`` is loaded in every pytest run.
Modules: ``sse`` and ``metrics`` (pure parsers), ``client`` (stdlib HTTP), ``launcher`` (start and stop
a server in its own process group), ``settings`` (the profile's ``[vllm]`` table), ``checks`` (one
function per check, returning a ``Verdict``), ``fit`` (the model-fit gate), ``testing`` (fake and
fault servers for tests).
"""

from __future__ import annotations
