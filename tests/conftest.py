"""Test set-up: four simulated CPU devices, so multi-device code runs in-process.

XLA reads the flag once, when the backend starts, so it is set before anything imports jax.
"""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One compilation cache for the session and the subprocesses it starts: the end-to-end tests compile the
# same train steps many times (fresh jit objects, identical programs).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gan_jax_jit_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


@pytest.fixture(scope="session")
def run_lecture_quick(tmp_path_factory):
    """`run(module)`: an experiments.lecture module's run(quick=True) in a fresh directory, its files checked."""

    def run(module):
        outdir = str(tmp_path_factory.mktemp(module.NAME))
        result = module.run(outdir, quick=True)
        with open(os.path.join(outdir, f"{module.NAME}.md"), encoding="utf-8") as f:
            assert f.read().strip() == result["markdown"].strip()
        assert result["png"] == os.path.join(outdir, f"{module.NAME}.png")
        with open(result["png"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        return result

    return run
