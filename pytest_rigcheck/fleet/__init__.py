"""Many rigs: merge per-node ``--rig-report`` files into one fleet verdict, and node-exporter textfiles."""
