"""The three products of a 3x3 convolution layer, each written several ways, timed alone.

Layer 2 of the Omniglot reference step (14 x 14 x 64 -> 64 channels, the query set's 75 images per
episode, 32 episodes in a ``lax.scan`` as ``batching="accumulate"`` runs them) dominates that step
on CPU. This script times its forward product, its input gradient and its weight gradient in every
form jaxmeta has tried, so the limit each form runs into is measured rather than guessed. Each
product is 2 * N * 576 * 64 FLOPs per episode (N = 75 * 14 * 14 rows).

Usage: ``python -m benchmarks.conv_products [--episodes 32] [--images 75] [--repeats 5] [--quick]``
(prints a Markdown table; JSON in ``benchmarks/results/conv_products_<backend>.json``).
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import harness

DN = ("NHWC", "HWIO", "NHWC")


def forms(size: int, channels: int):
    """``{label: (kind, fn(x, g, kernel))}``: every form of the three products.

    ``x`` is the layer's input and ``g`` the gradient of its output, both ``[B, size, size, channels]``;
    ``kernel`` is ``[3, 3, channels, channels]``. Forms of one kind return the same array: the
    output ``[B, size, size, channels]`` (forward), the gradient with respect to ``x`` (input), or
    the kernel's gradient ``[3, 3, channels, channels]`` (weight).

    Example:
      >>> import jax
      >>> x, g = jax.random.normal(jax.random.key(0), (2, 2, 5, 5, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 3))
      >>> outs = [fn(x, g, k) for kind, fn in forms(5, 3).values() if kind == "weight"]
      >>> all(bool(jax.numpy.allclose(o, outs[0], atol=1e-4)) for o in outs)
      True
    """
    import jax
    import jax.numpy as jnp

    from jaxmeta.nets.layers import conv3x3, im2col_3x3

    c = channels
    width = 9 * c

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DN)

    def rows(a):
        return a.reshape(-1, a.shape[-1])

    def per_image(x, g, k):  # one product per image (batched), then a sum over the images
        b = x.shape[0]
        return jnp.einsum("bnk,bno->ko", im2col_3x3(x).reshape(b, -1, width), g.reshape(b, -1, c)).reshape(k.shape)

    return {
        "forward: im2col patches times the kernel (as jaxmeta's im2col Conv-4)":
            ("forward", lambda x, g, k: im2col_3x3(x) @ k.reshape(width, c)),
        "forward: XLA's convolution (as jaxmeta's xla_vjp Conv-4)":
            ("forward", lambda x, g, k: conv3x3(x, k)),
        "input gradient: JAX's transpose of the im2col product (product into patches + nine pad-and-adds)":
            ("input", lambda x, g, k: jax.vjp(lambda a: im2col_3x3(a) @ k.reshape(width, c), x)[1](g)[0]),
        "input gradient: XLA's convolution of the output gradient with the flipped kernel (as jaxmeta's xla_vjp "
        "Conv-4)":
            ("input", lambda x, g, k: jax.vjp(lambda a: conv3x3(a, k), x)[1](g)[0]),
        "input gradient: JAX's transpose of XLA's convolution":
            ("input", lambda x, g, k: jax.vjp(lambda a: conv(a, k), x)[1](g)[0]),
        "weight gradient: patches contracted with the output gradient over rows (as jaxmeta's im2col Conv-4)":
            ("weight", lambda x, g, k: jax.lax.dot_general(rows(im2col_3x3(x)), rows(g), (((0,), (0,)), ((), ())))
             .reshape(k.shape)),
        "weight gradient: output gradient transposed, times the patches":
            ("weight", lambda x, g, k: (rows(g).T @ rows(im2col_3x3(x))).T.reshape(k.shape)),
        "weight gradient: one batched product per image, summed":
            ("weight", per_image),
        "weight gradient: XLA's convolution of the channels-first input with the output gradient as kernel "
        "(as jaxmeta's xla_vjp Conv-4)":
            ("weight", lambda x, g, k: jax.vjp(lambda w: conv3x3(x, w), k)[1](g)[0]),
        "weight gradient: JAX's transpose of XLA's convolution":
            ("weight", lambda x, g, k: jax.vjp(lambda w: conv(x, w), k)[1](g)[0]),
    }


def run(episodes: int, images: int, size: int, channels: int, repeats: int) -> list:
    import jax
    import jax.numpy as jnp

    from jaxmeta import train

    keys = jax.random.split(jax.random.key(0), 3)
    xs = jax.random.normal(keys[0], (episodes, images, size, size, channels))
    gs = jax.random.normal(keys[1], (episodes, images, size, size, channels))
    kernel = jax.random.normal(keys[2], (3, 3, channels, channels)) * 0.05
    flops = 2 * episodes * images * size * size * 9 * channels * channels
    rows = []
    for label, (kind, fn) in forms(size, channels).items():
        # the products are added into a carry of their own shape, so every output is kept, as inside a
        # meta-step (summing each to a scalar let XLA:CPU fuse the sum into the product: not what a step runs)
        out = jax.eval_shape(fn, xs[0], gs[0], kernel)

        def scanned(xs, gs, k, fn=fn, out=out):
            def body(total, xg):
                return total + fn(xg[0], xg[1], k), None
            return jax.lax.scan(body, jnp.zeros(out.shape, out.dtype), (xs, gs))[0]

        step = jax.jit(scanned, compiler_options=train.compiler_options() or None)  # as jaxmeta's meta-steps
        jax.block_until_ready(step(xs, gs, kernel))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(step(xs, gs, kernel))
            times.append(time.perf_counter() - t0)
        median = sorted(times)[len(times) // 2]
        rows.append({"product": kind, "form": label, "ms": 1e3 * median, "gflops_per_s": flops / median / 1e9})
        print(f"  {rows[-1]['ms']:9.1f} ms  {label}", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=32, help="episodes per scan (the reference meta-batch)")
    parser.add_argument("--images", type=int, default=75, help="images per episode (the reference query set)")
    parser.add_argument("--size", type=int, default=14, help="height and width of the layer's input")
    parser.add_argument("--channels", type=int, default=64, help="input and output channels")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per form (median reported)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.images, args.size, args.channels, args.repeats = 2, 2, 6, 4, 1
    machine = harness.machine_info()
    peak = harness.matmul_peak()
    rows = run(args.episodes, args.images, args.size, args.channels, args.repeats)
    for row in rows:
        row["pct_peak"] = 100 * row["gflops_per_s"] / peak["peak_gflops"]
    harness.print_table(rows, [("product", "product", "s"), ("form", "form", "s"), ("ms", "ms", ".4g"),
                               ("GFLOP/s", "gflops_per_s", ".3g"), ("% peak", "pct_peak", ".0f")],
                        f"3x3 conv products, {args.episodes} episodes x {args.images} images of "
                        f"{args.size}x{args.size}x{args.channels}; matmul peak {peak['peak_gflops']:.0f} GFLOP/s")
    name = "conv_products_quick" if args.quick else f"conv_products_{machine['backend']}"
    harness.write_results(name, {"machine": machine, "matmul_peak": peak, "settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
