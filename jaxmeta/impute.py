"""Meta-learned missing-data imputation for tables: :class:`MetaImputer` and plain baselines.

This is the application layer (it sits above ``learners``, ``scenarios`` and
``train`` and uses all three), with scikit-learn's conventions but no
scikit-learn dependency: ``fit(X)``, ``transform(X)``, ``fit_transform(X)`` on
a 2-D float array whose missing cells are NaN.

How it imputes. Every missing cell ``(q, j)`` is one task
(:mod:`jaxmeta.scenarios.imputation`): its context set is the ``k`` rows
nearest to row ``q`` (mean squared difference over co-observed cells, in the
min-max scaled table) with their values in column ``j``, described by their
distance, overlap, rank and the column's statistics. A meta-learner maps the
context set to a prediction for the cell:

* ``method="cnp"`` (model-based, :func:`jaxmeta.learners.cnp`): a
  conditional neural process encodes every (neighbour features, value) pair,
  averages them over the neighbours that observe column ``j`` and decodes the
  cell's value in one forward pass: a *learned* neighbour weighting and
  shrinkage instead of kNN's fixed average.
* ``method="maml"`` (gradient-based, :func:`jaxmeta.learners.maml`): a small
  MLP from neighbour features to value, meta-initialised so that a few SGD
  steps on the context set fit the local trend; the adapted MLP is evaluated at
  the cell itself (distance 0, rank 0).

With ``residual=True`` (the default) the targets are relative to the cell's
plain kNN estimate (the mean of its 10 nearest rows that observe the column,
``scenarios.imputation_episodes(..., centre=True)``): the networks learn a
*correction* of kNN, so a correction of zero is kNN itself.

Speed: the compiled programs (training step, prediction) are cached per
configuration and take parameters as arguments; prediction runs in fixed
chunks of :data:`PREDICT_CHUNK` cells; the neighbour search is one jitted
matrix-product-and-``top_k`` per chunk of ``chunk`` rows (memory ``chunk x
rows``). So ``fit`` and ``transform`` compile once per process and
configuration, whatever the table's size.

Meta-training (:meth:`MetaImputer.meta_train`) runs on many imputation tasks
from any tables (complete or not): observed cells are hidden at random and
predicted. ``fit(X)`` then *adapts* the meta-learned parameters to ``X`` with
``adapt_steps`` further steps on self-supervised tasks of ``X`` itself (only
its observed cells are ever targets), and keeps ``X``'s rows as donors.
``transform`` never changes observed cells; integer-valued columns are rounded
back to integers (and every column is clipped to its observed range).

Baselines with the same input conventions: :func:`mean_impute`,
:func:`knn_impute`, :func:`iterative_ridge_impute`.
"""

from __future__ import annotations

import functools
import io
import json
import time
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmeta import learners, losses, nets, scenarios, train
from jaxmeta.data.files import atomic_write_bytes
from jaxmeta.episodes import Episode

__all__ = ["MetaImputer", "check_table", "mean_impute", "knn_impute", "iterative_ridge_impute", "METHODS",
           "DEFAULT_HIDDEN"]

METHODS = ("cnp", "maml")
# MAML adapts a network per missing cell at transform time (inner_steps gradient steps each), so its
# default network is narrower: (32, 32) costs about a quarter of (64, 64) per cell on CPU.
DEFAULT_HIDDEN = {"cnp": (64, 64), "maml": (32, 32)}


def check_table(X, *, name: str = "X", n_features: Optional[int] = None, allow_empty_columns: bool = False) -> np.ndarray:
    """Validates a table with NaNs for missing cells and returns a float64 copy.

    Raises:
      ValueError: not 2-D, inf values, no observed cell, an entirely missing
        column (unless ``allow_empty_columns``: ``transform`` of a few rows), or a
        different number of columns than ``n_features``.
      TypeError: non-numeric dtype.

    Example:
      >>> check_table([[1.0, float("nan")], [2.0, 3.0]]).shape
      (2, 2)
    """
    try:
        A = np.array(X)
    except Exception:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name}: expected a 2-D numeric array, got {type(X).__name__}.") from None
    if A.dtype == object or not (np.issubdtype(A.dtype, np.number) or A.dtype == bool) or np.iscomplexobj(A):
        raise TypeError(f"{name}: expected a real numeric dtype (float, int), got {A.dtype}; encode categorical "
                        "columns as numbers first.")
    if A.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [rows, columns], got {A.ndim}-D shape {A.shape}; "
                         "reshape a single column with X.reshape(-1, 1).")
    A = A.astype(np.float64)
    if np.isinf(A).any():
        raise ValueError(f"{name}: holds {int(np.isinf(A).sum())} inf value(s); mark missing cells with NaN, "
                         "not inf.")
    if n_features is not None and A.shape[1] != n_features:
        raise ValueError(f"{name}: has {A.shape[1]} columns but fit saw {n_features}; transform a table with "
                         "the same columns.")
    obs = ~np.isnan(A)
    if A.size == 0 or not obs.any():
        raise ValueError(f"{name}: has no observed (non-NaN) cell; there is nothing to impute from.")
    empty = np.flatnonzero(~obs.any(axis=0))
    if len(empty) and not allow_empty_columns:
        raise ValueError(f"{name}: column(s) {empty.tolist()} are entirely NaN; drop them or give at least one "
                         "value.")
    return A


def _rounded(filled, A_obs_min, A_obs_max, integer_cols):
    out = np.clip(filled, A_obs_min, A_obs_max)
    out[:, integer_cols] = np.round(out[:, integer_cols])
    return out


def mean_impute(X) -> np.ndarray:
    """Fills every NaN with its column's observed mean.

    Example:
      >>> mean_impute([[1.0, float("nan")], [3.0, 4.0]]).tolist()
      [[1.0, 4.0], [3.0, 4.0]]
    """
    A = check_table(X)
    return np.where(np.isnan(A), np.nanmean(A, axis=0), A)


def knn_impute(X, k: int = 10, *, search: int = 32, chunk: int = 1024, scale: bool = True) -> np.ndarray:
    """k-nearest-neighbours imputation (as scikit-learn's ``KNNImputer``, uniform weights).

    Row distances are mean squared differences over co-observed cells (after
    min-max scaling with ``scale``); a missing cell gets the mean of the
    first ``k`` of the ``search`` nearest rows that observe its column (the
    column mean when none does).

    Args:
      X: ``[R, D]`` table with NaNs.
      k: neighbours averaged per cell.
      search: rows retrieved per row (``>= k``; more helps when many cells are missing).
      chunk: rows per compiled neighbour search.
      scale: min-max scale columns for the distance.

    Returns:
      The filled table (float64), observed cells unchanged.

    Example:
      >>> import numpy as np
      >>> X = np.array([[0.0, 0.0], [0.1, 1.0], [5.0, 9.0], [np.nan, 0.5]])
      >>> round(float(knn_impute(X, k=2, search=3)[3, 0]), 2)
      0.05
    """
    A = check_table(X)
    if int(k) < 1 or int(search) < int(k):
        raise ValueError(f"k, search: expected 1 <= k <= search, got k={k}, search={search}.")
    obs = ~np.isnan(A)
    lo, hi = np.nanmin(A, 0), np.nanmax(A, 0)
    S = (A - lo) / np.where(hi > lo, hi - lo, 1.0) if scale else A
    S = np.where(obs, S, 0.0)
    search = min(int(search), A.shape[0] - 1)
    nb = scenarios.nearest_rows(S, obs, search, chunk=chunk)
    idx = np.asarray(nb.index)
    fin = np.isfinite(np.asarray(nb.distance))
    Az = np.where(obs, A, 0.0)
    out = A.copy()
    means = np.nanmean(A, 0)
    for s in range(0, A.shape[0], 4096):
        ii, ff = idx[s : s + 4096], fin[s : s + 4096]
        nv, nm = Az[ii], obs[ii] & ff[..., None]  # [b, search, D]
        w = nm & (np.cumsum(nm, axis=1) <= int(k))
        cnt = w.sum(1)
        est = np.where(cnt > 0, (nv * w).sum(1) / np.maximum(cnt, 1), means)
        out[s : s + 4096] = np.where(obs[s : s + 4096], A[s : s + 4096], est)
    return out


def iterative_ridge_impute(X, *, iterations: int = 10, alpha: float = 1e-2) -> np.ndarray:
    """Iterative regression imputation (MICE-style, deterministic): ridge regression of each column on the others.

    Starts from the column means; each round regresses every column on all
    other (currently filled) columns over the rows where it is observed and
    refills its missing cells, for ``iterations`` rounds (the scheme of
    scikit-learn's ``IterativeImputer`` with a ridge estimator and no posterior sampling).

    Args:
      X: ``[R, D]`` table with NaNs.
      iterations: rounds over all columns.
      alpha: ridge penalty (on standardised columns).

    Returns:
      The filled table (float64).

    Example:
      >>> import numpy as np
      >>> x = np.arange(10.0); X = np.stack([x, 2 * x + 1], 1); X[3, 1] = np.nan
      >>> round(float(iterative_ridge_impute(X)[3, 1]), 2)
      7.0
    """
    A = check_table(X)
    obs = ~np.isnan(A)
    mu, sd = np.nanmean(A, 0), np.nanstd(A, 0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = np.where(obs, (A - mu) / sd, 0.0)
    D = A.shape[1]
    for _ in range(int(iterations)):
        for j in range(D):
            miss = ~obs[:, j]
            if not miss.any():
                continue
            others = np.delete(np.arange(D), j)
            F = np.c_[Z[:, others], np.ones(len(Z))]
            Fo, yo = F[~miss], Z[~miss, j]
            G = Fo.T @ Fo + alpha * len(Fo) * np.diag(np.r_[np.ones(D - 1), 0.0])
            beta = np.linalg.solve(G, Fo.T @ yo)
            Z[miss, j] = F[miss] @ beta
    return np.where(obs, A, Z * sd + mu)


def _learner(method: str, hidden: Sequence[int], inner_steps: int, inner_lr: float) -> learners.MetaLearner:
    if method == "cnp":
        return learners.cnp(encoder_hidden=tuple(hidden) + (hidden[-1],), decoder_hidden=tuple(hidden))
    if method == "maml":
        return learners.maml(nets.mlp(tuple(hidden), 1), losses.squared_error, inner_lr=inner_lr,
                             inner_steps=inner_steps, learn_inner_lr="per_layer")
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}.")


class _Programs(NamedTuple):
    learner: learners.MetaLearner
    optimizer: optax.GradientTransformation
    step: Callable  # (state, episodes, key) -> (state, metrics), jitted
    take: Callable  # (episodes, idx) -> episodes, jitted
    predict: Callable  # (params, episodes [B], key) -> [B], jitted


@functools.lru_cache(maxsize=16)
def _programs(method: str, hidden: tuple, inner_steps: int, inner_lr: float, lr: float) -> _Programs:
    """The compiled functions of one configuration, shared by every imputer with it.

    Parameters and data are arguments (never closed over), and the batch
    shapes are fixed (``batch_size`` for training, :data:`PREDICT_CHUNK` for
    prediction), so each program compiles once per process, not once per
    ``fit`` / ``transform`` call or per imputer.
    """
    learner = _learner(method, hidden, inner_steps, inner_lr)
    optimizer = optax.adam(lr)

    @jax.jit
    def predict(params, eps, key):
        keys = jax.random.split(key, eps.query_y.shape[0])

        def one(ep, kk):
            out = learner.predict(params, learner.adapt(params, ep, kk), ep.query_x)
            return (out[..., 0] if method == "cnp" else out).reshape(-1)[0]  # cnp: [..., (mean, std)]

        return jax.vmap(one)(eps, keys)

    return _Programs(learner, optimizer, train.make_meta_step(learner, optimizer), jax.jit(_take), predict)


PREDICT_CHUNK = 4096  # cells per compiled prediction call (the last chunk is padded)


def _take(episodes: Episode, idx) -> Episode:
    return jax.tree_util.tree_map(lambda a: a[idx], episodes)


def _concat(eps: Sequence[Episode]) -> Episode:
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *eps)


_CONFIG_KEYS = ("method", "k", "hidden", "inner_steps", "inner_lr", "adapt_steps", "adapt_rows", "adapt_lr",
                "extra_rate", "batch_size", "round_integers", "chunk", "residual", "seed")


class MetaImputer:
    """Fills the NaNs of a numeric table with a meta-learned, neighbour-conditioned imputer.

    See the module docstring for the method. Typical use::

        imp = MetaImputer.meta_train([table_1, table_2, ...], key=jax.random.key(0))   # once, offline
        filled = imp.fit_transform(X_with_nans)                                       # per table
        imp.save("imputer.npz"); imp = MetaImputer.load("imputer.npz")

    Without meta-training, ``fit`` starts from a random initialisation (then
    ``adapt_steps`` is ordinary training on ``X``'s self-supervised tasks).

    Args:
      method: ``"cnp"`` (model-based, one forward pass per cell) or ``"maml"``
        (gradient-based: ``inner_steps`` SGD steps per cell on its context set).
      k: neighbours in each cell's context set.
      hidden: hidden widths of the networks (default :data:`DEFAULT_HIDDEN` of ``method``).
      inner_steps, inner_lr: MAML's inner loop (``inner_lr`` is meta-learned per layer).
      adapt_steps: Adam steps of adaptation to the table in ``fit`` (0: use the
        meta-learned parameters as they are).
      adapt_rows: rows of the table drawn for the adaptation tasks.
      adapt_lr: Adam step size of meta-training and adaptation.
      extra_rate: fraction of observed cells hidden to make training tasks.
      batch_size: tasks per step.
      round_integers: round columns whose observed values are all integers.
      chunk: rows per compiled neighbour search (memory ``chunk x rows``).
      residual: the networks predict a correction of the cell's kNN estimate
        (``centre=True`` tasks), so an untrained correction of 0 is plain kNN.
      seed: seed of the imputer's own PRNG key (training tasks, initialisation).
      meta_params: meta-learned parameters (from :meth:`meta_train` or :meth:`load`).

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> z = rng.normal(size=(300, 1)); X = np.c_[z, 2 * z, -z] + 0.05 * rng.normal(size=(300, 3))
      >>> X[rng.uniform(size=X.shape) < 0.2] = np.nan
      >>> imp = MetaImputer(k=8, adapt_steps=30, adapt_rows=200, batch_size=64, hidden=(16,))
      >>> filled = imp.fit_transform(X)
      >>> filled.shape, bool(np.isnan(filled).any()), bool((filled[~np.isnan(X)] == X[~np.isnan(X)]).all())
      ((300, 3), False, True)
    """

    def __init__(self, method: str = "cnp", *, k: int = 32, hidden: Optional[Sequence[int]] = None, inner_steps: int = 3,
                 inner_lr: float = 0.1, adapt_steps: int = 1000, adapt_rows: int = 3000, adapt_lr: float = 1e-3,
                 extra_rate: float = 0.2, batch_size: int = 256, round_integers: bool = True, chunk: int = 1024,
                 residual: bool = True, seed: int = 0, meta_params=None):
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}.")
        for name, v in (("k", k), ("inner_steps", inner_steps), ("adapt_rows", adapt_rows),
                        ("batch_size", batch_size), ("chunk", chunk)):
            if int(v) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v}.")
        if int(adapt_steps) < 0:
            raise ValueError(f"adapt_steps: expected >= 0, got {adapt_steps}.")
        if not 0.0 < float(extra_rate) < 1.0:
            raise ValueError(f"extra_rate: expected a fraction in (0, 1), got {extra_rate}.")
        hidden = DEFAULT_HIDDEN[method] if hidden is None else tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden: expected positive layer widths, got {hidden}.")
        self.method, self.k, self.hidden = method, int(k), hidden
        self.inner_steps, self.inner_lr = int(inner_steps), float(inner_lr)
        self.adapt_steps, self.adapt_rows, self.adapt_lr = int(adapt_steps), int(adapt_rows), float(adapt_lr)
        self.extra_rate, self.batch_size = float(extra_rate), int(batch_size)
        self.round_integers, self.chunk, self.seed = bool(round_integers), int(chunk), int(seed)
        self.residual = bool(residual)
        self.meta_params = meta_params
        self.params_ = None
        self.timings_ = {}
        self._programs = _programs(method, hidden, self.inner_steps, self.inner_lr, self.adapt_lr)
        self._learner = self._programs.learner

    # ----- configuration, persistence ---------------------------------------------------------------
    def get_params(self) -> dict:
        """The constructor's settings (scikit-learn convention).

        Example:
          >>> MetaImputer(k=5).get_params()["k"]
          5
        """
        return {name: getattr(self, name) for name in _CONFIG_KEYS}

    def _example(self) -> Episode:
        F = len(scenarios.IMPUTATION_FEATURES)
        return Episode(jnp.zeros((self.k, F)), jnp.zeros((self.k, 1)), jnp.zeros((1, F)), jnp.zeros((1, 1)),
                       support_mask=jnp.ones((self.k,)))

    def _init_params(self, key):
        return self._learner.init(key, self._example())

    def save(self, path: str) -> None:
        """Writes settings, meta-learned and adapted parameters and the fitted table (if any) to ``path`` (.npz, atomic).

        Example:
          >>> import os, tempfile, numpy as np
          >>> X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 6.0], [4.0, 8.0]])
          >>> imp = MetaImputer(k=2, adapt_steps=2, batch_size=4, hidden=(8,)).fit(X)
          >>> p = os.path.join(tempfile.mkdtemp(), "imp.npz"); imp.save(p)
          >>> bool(np.allclose(MetaImputer.load(p).transform(X), imp.transform(X)))
          True
        """
        arrays = {}
        for tag, tree in (("meta", self.meta_params), ("fit", self.params_)):
            if tree is not None:
                for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
                    arrays[f"{tag}_{i}"] = np.asarray(leaf)
        state = {"config": self.get_params(), "fitted": self.params_ is not None,
                 "meta": self.meta_params is not None}
        if self.params_ is not None:
            for name in ("table_", "lo_", "hi_", "integer_"):
                arrays[name] = np.asarray(getattr(self, name))
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())  # synced temporary file + rename, usual permissions

    @classmethod
    def load(cls, path: str) -> "MetaImputer":
        """Reads an imputer written by :meth:`save` (see its example)."""
        with np.load(path) as z:
            state = json.loads(bytes(z["state"]).decode())
            cfg = dict(state["config"])
            cfg["hidden"] = tuple(cfg["hidden"])
            imp = cls(**cfg)
            treedef = jax.tree_util.tree_structure(imp._init_params(jax.random.key(0)))
            for tag, attr, present in (("meta", "meta_params", state["meta"]), ("fit", "params_", state["fitted"])):
                if present:
                    leaves = [jnp.asarray(z[f"{tag}_{i}"]) for i in range(treedef.num_leaves)]
                    setattr(imp, attr, jax.tree_util.tree_unflatten(treedef, leaves))
            if state["fitted"]:
                imp.table_, imp.lo_, imp.hi_ = z["table_"], z["lo_"], z["hi_"]
                imp.integer_ = z["integer_"]
                imp.n_features_in_ = imp.table_.shape[1]
        return imp

    # ----- training ---------------------------------------------------------------------------------
    def _train(self, params, tasks: Episode, steps: int, key):
        prog = self._programs
        state = train.MetaState(params, prog.optimizer.init(params), jnp.zeros((), jnp.int32))
        n = tasks.query_y.shape[0]
        history = []
        for t in range(int(steps)):
            k_idx, k_step = jax.random.split(jax.random.fold_in(key, t))
            idx = jax.random.randint(k_idx, (self.batch_size,), 0, n)
            state, metrics = prog.step(state, prog.take(tasks, idx), k_step)
            if t % 50 == 0 or t == steps - 1:
                history.append(metrics["loss"])
        self.history_ = [float(v) for v in history]  # one host transfer at the end, not one per step
        return state.params

    @classmethod
    def meta_train(cls, tables: Sequence, *, key: jax.Array, steps: int = 2000, missing_rates=(0.1, 0.2, 0.3, 0.5, 0.8),
                   rows_per_table: int = 1000, **settings) -> "MetaImputer":
        """Meta-trains an imputer on imputation tasks from many tables.

        Each table is min-max scaled with its observed values; for every
        missing rate an MCAR mask is drawn, observed cells of ``rows_per_table``
        rows are hidden at ``extra_rate`` and predicted from their neighbours
        (:func:`jaxmeta.scenarios.masked_cell_tasks`). NaNs in a table are
        treated as missing (never targets).

        Args:
          tables: 2-D arrays (NaN = missing), any number of rows; every table
            needs more than ``k`` rows.
          key: PRNG key.
          steps: Adam steps over the pooled tasks.
          missing_rates: MCAR rates applied to each table.
          rows_per_table: rows per (table, rate) drawn for tasks.
          **settings: :class:`MetaImputer` settings.

        Returns:
          A :class:`MetaImputer` with ``meta_params`` set (and ``timings_["meta_train_s"]``).

        Example:
          >>> import jax
          >>> from jaxmeta import scenarios
          >>> tables = [scenarios.synthetic_table(jax.random.key(i), 200, 4) for i in range(2)]
          >>> imp = MetaImputer.meta_train(tables, key=jax.random.key(0), steps=5, rows_per_table=100,
          ...                              missing_rates=(0.2,), k=8, hidden=(8,), batch_size=16)
          >>> imp.meta_params is not None
          True
        """
        imp = cls(**settings)
        if len(tables) == 0:
            raise ValueError("tables: expected at least one table.")
        start = time.perf_counter()
        k_tasks, k_init, k_train = jax.random.split(key, 3)
        pool = []
        for i, T in enumerate(tables):
            A = check_table(T, name=f"tables[{i}]")
            if A.shape[0] <= imp.k:
                raise ValueError(f"tables[{i}]: has {A.shape[0]} rows; needs more than k={imp.k}.")
            S, obs, _, _ = _scaled(A)
            for j, rate in enumerate(missing_rates):
                kk = jax.random.fold_in(jax.random.fold_in(k_tasks, i), j)
                k_mask, k_cells = jax.random.split(kk)
                seen = obs & np.asarray(scenarios.mcar_mask(k_mask, A.shape, rate))
                pool.append(scenarios.masked_cell_tasks(k_cells, S, seen, k=imp.k, extra_rate=imp.extra_rate,
                                                        num_rows=min(rows_per_table, A.shape[0]), chunk=imp.chunk,
                                                        centre=imp.residual))
        tasks = _concat(pool)
        imp.meta_params = imp._train(imp._init_params(k_init), tasks, steps, k_train)
        imp.timings_ = {"meta_train_s": time.perf_counter() - start, "meta_train_tasks": int(tasks.query_y.shape[0])}
        return imp

    def fit(self, X, y=None) -> "MetaImputer":
        """Adapts the imputer to table ``X`` (NaN = missing) and keeps its rows as donors.

        Args:
          X: ``[R, D]`` numeric table; at least ``k + 1`` rows.
          y: ignored (scikit-learn convention).

        Returns:
          ``self``.
        """
        A = check_table(X)
        if A.shape[0] <= self.k:
            raise ValueError(f"X: has {A.shape[0]} rows; needs more than k={self.k} (lower k).")
        start = time.perf_counter()
        S, obs, lo, hi = _scaled(A)
        self.lo_, self.hi_ = lo, hi
        Aobs = np.where(obs, A, 0.0)
        self.integer_ = np.flatnonzero(np.all((Aobs == np.round(Aobs)), axis=0)) if self.round_integers else \
            np.zeros(0, np.int64)
        self.table_ = np.where(obs, S, np.nan).astype(np.float32)
        self.n_features_in_ = A.shape[1]
        key = jax.random.key(self.seed)
        k_init, k_tasks, k_train = jax.random.split(key, 3)
        params = self.meta_params if self.meta_params is not None else self._init_params(k_init)
        if self.adapt_steps > 0:
            tasks = scenarios.masked_cell_tasks(k_tasks, S, obs, k=self.k, extra_rate=self.extra_rate,
                                                num_rows=min(self.adapt_rows, A.shape[0]), chunk=self.chunk,
                                                centre=self.residual)
            if tasks.query_y.shape[0] == 0:
                raise ValueError("X: has too few observed cells to build adaptation tasks; set adapt_steps=0.")
            params = self._train(params, tasks, self.adapt_steps, k_train)
        self.params_ = params
        self.timings_ = dict(self.timings_, fit_s=time.perf_counter() - start)
        return self

    def _predict_cells(self, episodes: Episode, key) -> np.ndarray:
        """Predictions (scaled) for a batch of cell tasks, in fixed-size chunks of one compiled program."""
        predict, params = self._programs.predict, self.params_
        n = episodes.query_y.shape[0]
        B = PREDICT_CHUNK
        preds = []
        for s in range(0, n, B):
            part = _take(episodes, slice(s, min(s + B, n)))
            m = part.query_y.shape[0]
            if m < B:  # pad to the fixed size: no recompilation for the remainder
                part = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], B - m, 0)]), part)
            preds.append(predict(params, part, jax.random.fold_in(key, s))[:m])
        return np.asarray(jnp.concatenate(preds)) if preds else np.zeros(0)

    def transform(self, X) -> np.ndarray:
        """Returns ``X`` with every NaN filled; observed cells are returned unchanged (a new array).

        Rows are matched against the rows given to ``fit`` (and against each
        other when ``X`` is a new table). A row with every cell missing gets
        the column means of the fitted table.

        Args:
          X: ``[R, D]`` table with the columns ``fit`` saw.

        Returns:
          ``[R, D]`` float64 array without NaNs.
        """
        if self.params_ is None:
            raise ValueError("transform: call fit(X) first (or load a fitted imputer).")
        A = check_table(X, n_features=self.n_features_in_, allow_empty_columns=True)
        start = time.perf_counter()
        obs = ~np.isnan(A)
        span = np.where(self.hi_ > self.lo_, self.hi_ - self.lo_, 1.0)
        S = np.where(obs, (A - self.lo_) / span, 0.0).astype(np.float32)
        same = A.shape == self.table_.shape and np.array_equal(np.isnan(self.table_), ~obs) and np.allclose(
            np.where(obs, S, 0), np.nan_to_num(self.table_), atol=1e-6)
        if same:
            V, O, offset = S, obs, 0
        else:
            V = np.concatenate([np.nan_to_num(self.table_), S])
            O = np.concatenate([~np.isnan(self.table_), obs])
            offset = self.table_.shape[0]
        out = A.copy()
        rows_with_gaps = np.flatnonzero((~obs).any(axis=1) & obs.any(axis=1))
        if len(rows_with_gaps):
            nb = scenarios.nearest_rows(V, O, self.k, query_rows=rows_with_gaps + offset, chunk=self.chunk)
            pos = np.full(A.shape[0], -1)
            pos[rows_with_gaps] = np.arange(len(rows_with_gaps))
            cr, cc = np.nonzero(~obs & obs.any(axis=1, keepdims=True))
            nb_cells = scenarios.Neighbours(*(a[pos[cr]] for a in nb))
            eps = scenarios.imputation_episodes(V, O, cr + offset, cc, nb_cells, centre=self.residual)
            pred = self._predict_cells(eps, jax.random.key(self.seed + 1)) + np.asarray(eps.aux["offset"])
            out[cr, cc] = pred * span[cc] + self.lo_[cc]
        empty = ~obs.any(axis=1)
        if empty.any():  # nothing to match on: the fitted column means
            out[empty] = np.nanmean(self.table_, axis=0) * span + self.lo_
        filled = _rounded(out, self.lo_, self.hi_, self.integer_)
        self.timings_ = dict(self.timings_, transform_s=time.perf_counter() - start)
        return np.where(obs, A, filled)

    def fit_transform(self, X, y=None) -> np.ndarray:
        """``fit(X).transform(X)``.

        Example:
          >>> import numpy as np
          >>> X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 6.0], [4.0, 8.0]])
          >>> MetaImputer(k=2, adapt_steps=0, hidden=(8,)).fit_transform(X)[0].tolist()
          [1.0, 2.0]
        """
        return self.fit(X).transform(X)


def _scaled(A: np.ndarray):
    """Min-max scaling with observed values: ``(scaled with 0 at missing cells, observed, lo, hi)``."""
    obs = ~np.isnan(A)
    lo, hi = np.nanmin(A, axis=0), np.nanmax(A, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    S = np.where(obs, (A - lo) / span, 0.0).astype(np.float32)
    return S, obs, lo, hi
