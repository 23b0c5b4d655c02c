"""Test set-up: four simulated CPU devices, so multi-device code runs in-process.

XLA reads the flag once, when the backend starts, so it is set before anything imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
