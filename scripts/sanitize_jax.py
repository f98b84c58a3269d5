"""Small cases of every pyops.jax CUDA handler (forward and backward), for compute-sanitizer:

    compute-sanitizer --tool memcheck python scripts/sanitize_jax.py
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import pyops.jax as pj  # noqa: E402


def main() -> None:
    gpu = jax.devices("gpu")[0]
    keys = iter(jax.random.split(jax.random.key(0), 16))

    def randn(*shape):
        return jax.device_put(jax.random.normal(next(keys), shape), gpu)

    x, pts = randn(2, 5, 9, 13), jax.device_put(jax.random.uniform(next(keys), (2, 37, 2)), gpu)
    jax.block_until_ready(jax.grad(lambda x, c: pj.point_sample(x, c).sum(), (0, 1))(x, pts))
    q, k, E = randn(2, 3, 19, 40), randn(2, 3, 23, 40), randn(23, 70) / 5
    jax.block_until_ready(jax.grad(lambda q, k: pj.linformer_attention(q, k, k, E, dropout_p=0.2, seed=3).sum(),
                                   (0, 1))(q, k))
    img = randn(2, 3, 24, 29)
    G = jnp.tile(jnp.array([[0.9, -0.2, 1.5], [0.2, 0.9, -2.0], [0.0, 0.0, 1.0]]), (2, 1, 1))
    C = jnp.tile(jnp.eye(4) * 0.9, (2, 1, 1))
    jax.block_until_ready(jax.grad(lambda a: pj.ada_geometric_color(a, G, C).sum())(img))
    filters = jnp.full((2, 43), 1 / 43)
    boxes = jnp.array([[0.5, 0.5, 0.3, 0.4], [0.1, 0.9, 0.5, 0.5]])
    sigma, noise = jnp.array([0.1, 0.2]), randn(2, 3, 24, 29)
    jax.block_until_ready(jax.grad(lambda a: pj.ada_filter_noise_cutout(a, filters, sigma, noise, boxes).sum())(img))
    print("sanitize_jax: every pyops.jax CUDA handler ran")


if __name__ == "__main__":
    main()
