"""Command-line experiments built on gan_jax (absl apps, configs, lecture reproductions)."""
