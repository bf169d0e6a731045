"""The rig conformance suites shipped with pytest-rigcheck; collected only under ``pytest --rig``."""
