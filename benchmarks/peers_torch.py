"""PyTorch peers for the meta-step benchmark: learn2learn's MAML and torch.func MAML.

Imported only inside a benchmark worker process when the ``peers`` extra is
installed (see README.md in this folder). The networks mirror jaxmeta's exactly
(same layers, same initial weights copied from the JAX parameters), so every
implementation computes the same meta-gradient on the same data; the worker
checks that before timing.

learn2learn is imported "carefully": its package ``__init__`` pulls in vision
and data modules that need torchvision, gym and more, none of which MAML uses.
We register an empty ``learn2learn`` package pointing at the installed files
and import ``learn2learn.algorithms.maml`` directly.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def import_learn2learn_maml():
    """``learn2learn.algorithms.maml.MAML`` without executing learn2learn's package ``__init__``."""
    spec = importlib.util.find_spec("learn2learn")
    if spec is None:
        raise ImportError("learn2learn is not installed (see benchmarks/README.md for the --no-deps install).")
    for name, path in (("learn2learn", spec.submodule_search_locations),
                       ("learn2learn.algorithms", [p + "/algorithms" for p in spec.submodule_search_locations])):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = list(path)
            sys.modules[name] = module
    from learn2learn.algorithms.maml import MAML  # noqa: E402

    return MAML


class TorchConv4(nn.Module):
    """Conv-4 matching ``jaxmeta.nets.conv4`` (batch statistics, no running averages)."""

    def __init__(self, out, channels=64, downsample="max_pool", readout="flatten", in_channels=1):
        super().__init__()
        self.downsample, self.readout = downsample, readout
        layers = []
        for i in range(4):
            stride = 2 if downsample == "stride" else 1
            layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=stride, padding=1))
            layers.append(nn.BatchNorm2d(channels, eps=1e-5, track_running_stats=False))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(channels, out)

    def forward(self, x):  # x: [B, 1, H, W]
        for i in range(4):
            x = F.relu(self.layers[2 * i + 1](self.layers[2 * i](x)))
            if self.downsample == "max_pool":
                x = F.max_pool2d(x, 2)
        x = x.mean(dim=(2, 3)) if self.readout == "mean" else x.flatten(1)
        return self.head(x)


class TorchMLP(nn.Module):
    """1-40-40-1 ReLU MLP matching ``jaxmeta.nets.mlp((40, 40), 1)``."""

    def __init__(self, hidden=(40, 40), out=1, in_features=1):
        super().__init__()
        sizes = (in_features,) + tuple(hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], out)

    def forward(self, x):
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.head(x)


def load_jax_params(model: nn.Module, params: dict) -> None:
    """Copies jaxmeta params (``{"conv_i", "norm_i", "hidden_i", "head"}``) into the torch model."""
    with torch.no_grad():
        if isinstance(model, TorchConv4):
            for i in range(4):
                conv, norm = model.layers[2 * i], model.layers[2 * i + 1]
                conv.weight.copy_(torch.from_numpy(np.transpose(np.asarray(params[f"conv_{i}"]["kernel"]), (3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(np.asarray(params[f"conv_{i}"]["bias"])))
                norm.weight.copy_(torch.from_numpy(np.asarray(params[f"norm_{i}"]["scale"])))
                norm.bias.copy_(torch.from_numpy(np.asarray(params[f"norm_{i}"]["bias"])))
        else:
            for i, layer in enumerate(model.hidden):
                layer.weight.copy_(torch.from_numpy(np.asarray(params[f"hidden_{i}"]["kernel"]).T))
                layer.bias.copy_(torch.from_numpy(np.asarray(params[f"hidden_{i}"]["bias"])))
        model.head.weight.copy_(torch.from_numpy(np.asarray(params["head"]["kernel"]).T))
        model.head.bias.copy_(torch.from_numpy(np.asarray(params["head"]["bias"])))


def _loss(outputs, targets, regression):
    return F.mse_loss(outputs, targets) if regression else F.cross_entropy(outputs, targets)


def make_l2l_step(model, *, inner_lr, inner_steps, first_order, outer_lr, regression):
    """learn2learn's MAML as its Omniglot example runs it: a Python loop over tasks,
    ``clone()`` + ``adapt()`` per task, gradients accumulated, one Adam step."""
    MAML = import_learn2learn_maml()
    maml = MAML(model, lr=inner_lr, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), outer_lr)

    def step(batch):
        sx, sy, qx, qy = batch
        opt.zero_grad()
        total = 0.0
        for t in range(sx.shape[0]):
            learner = maml.clone()
            for _ in range(inner_steps):
                learner.adapt(_loss(learner(sx[t]), sy[t], regression))
            loss = _loss(learner(qx[t]), qy[t], regression) / sx.shape[0]
            loss.backward()
            total += float(loss)
        opt.step()
        return total

    def meta_gradient(batch):
        opt.zero_grad()
        sx, sy, qx, qy = batch
        for t in range(sx.shape[0]):
            learner = maml.clone()
            for _ in range(inner_steps):
                learner.adapt(_loss(learner(sx[t]), sy[t], regression))
            (_loss(learner(qx[t]), qy[t], regression) / sx.shape[0]).backward()
        return {n: p.grad.detach().clone() for n, p in maml.module.named_parameters()}

    return step, meta_gradient


def make_torchfunc_step(model, *, inner_lr, inner_steps, first_order, outer_lr, regression, use_vmap):
    """MAML with torch.func: ``functional_call`` + ``grad`` for the inner loop, ``vmap`` (or a
    loop) over tasks, ``grad`` of the mean query loss for the outer step, then Adam."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt_params = [p.requires_grad_() for p in params.values()]
    opt = torch.optim.Adam(opt_params, outer_lr)

    def task_loss(p, sx, sy, qx, qy):
        for _ in range(inner_steps):
            g = grad(lambda q: _loss(functional_call(model, q, (sx,)), sy, regression))(p)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            p = {k: p[k] - inner_lr * g[k] for k in p}
        return _loss(functional_call(model, p, (qx,)), qy, regression)

    def batch_loss(p, sx, sy, qx, qy):
        if use_vmap:
            return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()
        return torch.stack([task_loss(p, sx[t], sy[t], qx[t], qy[t]) for t in range(sx.shape[0])]).mean()

    outer_grad = grad(batch_loss)

    def step(batch):
        g = outer_grad({k: v.detach() for k, v in params.items()}, *batch)
        for k, v in params.items():
            v.grad = g[k]
        opt.step()
        return 0.0

    def meta_gradient(batch):
        return outer_grad({k: v.detach() for k, v in params.items()}, *batch)

    return step, meta_gradient
