"""The run's environment and the container: what the process that runs NCCL, PyTorch and vLLM sees.

``state`` reads it (live, or the snapshot's ``env.json``), ``checks`` judges it, ``plugin`` wires the
``rig_runenv`` fixture, ``capture`` records it for ``rigcheck capture``. Stdlib only.
"""
