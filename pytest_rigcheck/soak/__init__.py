"""Soak: sustained load on every GPU at once, sampled every second, judged per GPU from the samples.

``judge`` holds the pure parts (settings, profile section, the samples' record and the verdict),
``run`` the live run (the load worker, NVML and sysfs sampling), ``plugin`` the options and fixtures.
"""
