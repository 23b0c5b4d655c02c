"""gan_jax: adversarial (likelihood-free) generative modelling in JAX.

Notebook users need only the pure array functions::

    from gan_jax import losses, divergences, transport
"""

__version__ = "0.1.0"
