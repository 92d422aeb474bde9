"""Cold-start recommendation as few-shot regression (MeLU, Lee et al., KDD 2019).

Each user is a task: the support set is ``K`` items the user rated, the query
set is up to ``Q`` other items the user rated, and the targets are the ratings
(1..5). Works on any ratings data with user demographics and item genres and
release dates; :func:`jaxmeta.data.load_movielens_100k` provides MovieLens-100K.

**Feature encoding** (one row of ``x`` per (user, item) pair, ``float32``):

====  ===============  =========================================================
col   feature          values
====  ===============  =========================================================
0     age bucket       0..6: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
1     gender           0 = M, 1 = F
2     occupation       index into ``u.occupation`` (0..20)
3     zip region       first digit of the zip code (0..9), 10 for non-US codes
4     release year     0 unknown, 1 before 1930, 2..7 the decades 1930s..1980s,
                       8..16 the single years 1990..1998 (later years: 16)
5     item id          ``item + 1`` for an *existing* item, 0 for a new item
                       (a new item's id is never seen in training, so it maps
                       to the shared "unknown item" row)
6..   genre flags      ``G`` floats in {0, 1} (19 for MovieLens)
====  ===============  =========================================================

Columns ``0..5`` are categorical ids (stored exactly as floats, since
:class:`~jaxmeta.Episode` inputs are floating point); ``vocab_sizes`` gives
their ranges, in order, and the remaining ``num_dense`` columns are numeric.
This is the layout :func:`jaxmeta.nets.embedding_mlp` reads. Targets ``y`` are
the ratings as floats, ``[.., 1]``.

**Splits** (MeLU's four scenarios), all from one :class:`ColdStartSplit`:

* items: the newest ``new_item_fraction`` of items by release date are *new*
  (a date threshold, so a day's releases stay together; an unknown date counts
  as existing);
* users: a random ``new_user_fraction`` of users (drawn with ``key``) are *new*;
* meta-training uses existing users on existing items only, minus each
  existing user's latest ``warm_query_fraction`` of those ratings, which are
  held out as the warm scenario's query items.

=========================  ==================  ===================================
scenario                   users               support / query items
=========================  ==================  ===================================
``warm``                   existing            support from the training ratings,
                                               query from the held-out latest ones
``new_user_existing_item`` new                 existing items
``existing_user_new_item`` existing            new items
``new_user_new_item``      new                 new items
=========================  ==================  ===================================

A user whose pool holds fewer than ``K + 1`` ratings (``K`` support + 1 query)
is skipped; :class:`ColdStartEpisodes` returns how many, and the count is
logged (logger ``jaxmeta.scenarios.coldstart``, level INFO).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxmeta.episodes import Episode

__all__ = [
    "ColdStartData",
    "ColdStartSplit",
    "ColdStartEpisodes",
    "SCENARIOS",
    "FEATURE_NAMES",
    "AGE_EDGES",
    "coldstart_data",
    "coldstart_split",
    "coldstart_episodes",
    "coldstart_sampler",
    "synthetic_ratings",
]

log = logging.getLogger(__name__)

SCENARIOS = ("warm", "new_user_existing_item", "existing_user_new_item", "new_user_new_item")
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups
FEATURE_NAMES = ("age_bucket", "gender", "occupation", "zip_region", "release_year", "item_id")
_ITEM_COL = 5  # column of the item id in x
_NUM_USER_COLS = 4


class ColdStartData(NamedTuple):
    """Ratings with encoded features (NumPy; see the module docstring for the columns).

    Attributes:
      user: ``[R]`` int32 user index of each rating.
      item: ``[R]`` int32 item index.
      rating: ``[R]`` float32 rating.
      timestamp: ``[R]`` int64 time of the rating.
      user_x: ``[U, 4]`` float32 user feature ids (columns 0..3 of ``x``).
      item_x: ``[I, 2 + G]`` float32 item features (columns 4.. of ``x``), with
        the item id column set to ``item + 1``.
      release_date: ``[I]`` ``datetime64[D]`` (``NaT`` unknown), for the item split.
      vocab_sizes: sizes of the categorical columns 0..5.
      num_dense: number of numeric columns after them (the genre flags).
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_x: np.ndarray
    item_x: np.ndarray
    release_date: np.ndarray
    vocab_sizes: Tuple[int, ...]
    num_dense: int

    @property
    def num_users(self) -> int:
        return int(self.user_x.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_x.shape[0])

    @property
    def num_features(self) -> int:
        return len(self.vocab_sizes) + self.num_dense

    def __repr__(self) -> str:
        return f"ColdStartData({self.rating.shape[0]} ratings, {self.num_users} users, {self.num_items} items)"


class ColdStartSplit(NamedTuple):
    """Which users and items are new, and which ratings meta-training may use.

    Attributes:
      new_user: ``[U]`` bool.
      new_item: ``[I]`` bool.
      train: ``[R]`` bool, the meta-training ratings (existing user, existing
        item, not held out).
      warm_query: ``[R]`` bool, each existing user's held-out latest ratings of
        existing items (the warm scenario's query items).
    """

    new_user: np.ndarray
    new_item: np.ndarray
    train: np.ndarray
    warm_query: np.ndarray


class ColdStartEpisodes(NamedTuple):
    """Test episodes of one scenario, one per eligible user.

    Attributes:
      episodes: batched :class:`~jaxmeta.Episode`; ``aux`` holds
        ``{"user": [E], "support_item": [E, S], "query_item": [E, Q]}`` (int32
        indices; padding entries are 0 and masked).
      users: ``[E]`` int32, the user of each episode.
      num_skipped: users of the scenario with fewer than ``K + 1`` ratings.
      num_candidates: users of the scenario with at least one rating in it.
    """

    episodes: Episode
    users: np.ndarray
    num_skipped: int
    num_candidates: int


def synthetic_ratings(key: jax.Array, *, num_users: int = 60, num_items: int = 80, ratings_per_user: Tuple[int, int] = (5, 40),
                      num_genres: int = 5):
    """A small MovieLens-shaped ratings set from a latent-factor model (for examples and smoke tests).

    Ratings are ``clip(round(3.5 + user bias + item bias + <u, v>), 1, 5)``
    with 2-d user and item factors; demographics, dates and genres are random.
    The result has the fields :func:`coldstart_data` reads (the same as
    :class:`jaxmeta.data.MovieLens`).

    Args:
      key: PRNG key (the same key gives the same data).
      num_users, num_items: table sizes.
      ratings_per_user: ``(low, high)``: each user rates a uniform number of
        distinct items in ``[low, high)`` (at most ``num_items``).
      num_genres: number of genre flags.

    Returns:
      A ``types.SimpleNamespace`` with ``user, item, rating, timestamp, age,
      gender, occupation, zip_code, occupations, release_date, genres``.

    Example:
      >>> import jax
      >>> toy = synthetic_ratings(jax.random.key(0), num_users=10, num_items=20)
      >>> toy.genres.shape, int(toy.rating.min()) >= 1, int(toy.rating.max()) <= 5
      ((20, 5), True, True)
    """
    from types import SimpleNamespace

    lo, hi = (int(v) for v in ratings_per_user)
    if num_users < 1 or num_items < 1 or not 1 <= lo < hi:
        raise ValueError(f"num_users, num_items must be positive and ratings_per_user a (low, high) range with "
                         f"1 <= low < high, got {num_users}, {num_items}, {ratings_per_user}.")
    rng = _rng(key)
    user, item = [], []
    for u in range(num_users):
        n = min(int(rng.integers(lo, hi)), num_items)
        user += [u] * n
        item += rng.choice(num_items, n, replace=False).tolist()
    user, item = np.asarray(user, np.int32), np.asarray(item, np.int32)
    u_vec, i_vec = rng.normal(size=(num_users, 2)), rng.normal(size=(num_items, 2))
    score = 3.5 + 0.5 * rng.normal(size=num_users)[user] + 0.5 * rng.normal(size=num_items)[item]
    score = score + 0.6 * np.sum(u_vec[user] * i_vec[item], 1)
    days = rng.integers(0, 60 * 365, num_items)
    return SimpleNamespace(
        user=user, item=item, rating=np.clip(np.round(score), 1, 5).astype(np.int32),
        timestamp=rng.integers(880_000_000, 890_000_000, user.size), age=rng.integers(12, 70, num_users),
        gender=rng.integers(0, 2, num_users), occupation=rng.integers(0, 5, num_users),
        zip_code=np.asarray([f"{z:05d}" for z in rng.integers(0, 100_000, num_users)]),
        occupations=tuple(f"occupation{i}" for i in range(5)),
        release_date=np.datetime64("1938-01-01") + days.astype("timedelta64[D]"),
        genres=(rng.random((num_items, num_genres)) < 0.3).astype(np.float32))


def _year_bucket(years: np.ndarray, known: np.ndarray) -> np.ndarray:
    bucket = np.where(years < 1930, 1, np.where(years < 1990, 2 + (years - 1930) // 10, 8 + np.minimum(years, 1998) - 1990))
    return np.where(known, bucket, 0).astype(np.int32)


def _zip_region(codes) -> np.ndarray:
    return np.asarray([int(c[0]) if c[:1].isdigit() else 10 for c in (str(z) for z in codes)], np.int32)


def coldstart_data(ratings) -> ColdStartData:
    """Encodes a ratings data set (e.g. :class:`jaxmeta.data.MovieLens`) into feature tables.

    Args:
      ratings: an object with ``user, item, rating, timestamp`` (0-based
        indices, ratings in 1..5), ``age, gender, occupation, zip_code`` per
        user, ``release_date`` (``datetime64``) and ``genres [I, G]`` per item,
        and ``occupations`` (the code list).

    Returns:
      A :class:`ColdStartData`.

    Raises:
      ValueError: an index is outside the user/item tables, or a rating is
        outside 1..5 (the message names the field and the first bad row).

    Example:
      >>> import numpy as np
      >>> from types import SimpleNamespace
      >>> toy = SimpleNamespace(user=np.array([0, 1]), item=np.array([1, 0]), rating=np.array([5, 3]),
      ...     timestamp=np.array([1, 2]), age=np.array([20, 60]), gender=np.array([0, 1]),
      ...     occupation=np.array([0, 1]), zip_code=np.array(["94043", "T8H1N"]), occupations=("a", "b"),
      ...     release_date=np.array(["1995-01-01", "NaT"], "datetime64[D]"), genres=np.eye(2, dtype=np.float32))
      >>> data = coldstart_data(toy)
      >>> data.user_x.tolist(), data.item_x[:, :2].tolist(), data.vocab_sizes
      ([[1.0, 0.0, 0.0, 9.0], [6.0, 1.0, 1.0, 10.0]], [[13.0, 1.0], [0.0, 2.0]], (7, 2, 2, 11, 17, 3))
    """
    user = np.asarray(ratings.user, np.int32)
    item = np.asarray(ratings.item, np.int32)
    rating = np.asarray(ratings.rating, np.float32)
    num_users, num_items = len(ratings.age), len(ratings.genres)
    if not (user.shape == item.shape == rating.shape):
        raise ValueError(f"ratings: user, item and rating must have the same length, got {user.shape}, "
                         f"{item.shape}, {rating.shape}.")
    for name, idx, n in (("user", user, num_users), ("item", item, num_items)):
        bad = np.flatnonzero((idx < 0) | (idx >= n))
        if bad.size:
            raise ValueError(f"ratings.{name}: index {idx[bad[0]]} at row {bad[0]} is outside 0..{n - 1} "
                             f"({bad.size} bad rows); indices are 0-based (file id - 1).")
    bad = np.flatnonzero(~((rating >= 1) & (rating <= 5)))
    if bad.size:
        raise ValueError(f"ratings.rating: {rating[bad[0]]} at row {bad[0]} is outside 1..5 ({bad.size} bad rows).")
    occupation = np.asarray(ratings.occupation, np.int32)
    num_occupations = len(ratings.occupations)
    if occupation.size and (occupation.min() < 0 or occupation.max() >= num_occupations):
        raise ValueError(f"ratings.occupation: indices must lie in 0..{num_occupations - 1}.")
    age_bucket = np.searchsorted(np.asarray(AGE_EDGES), np.asarray(ratings.age), side="right")
    user_x = np.stack([age_bucket, np.asarray(ratings.gender), occupation, _zip_region(ratings.zip_code)], 1)

    dates = np.asarray(ratings.release_date, dtype="datetime64[D]")
    known = ~np.isnat(dates)
    years = np.where(known, dates.astype("datetime64[Y]").astype(np.int64) + 1970, 0)
    genres = np.asarray(ratings.genres, np.float32)
    item_x = np.concatenate([_year_bucket(years, known)[:, None], np.arange(1, num_items + 1)[:, None], genres], 1)
    vocab = (len(AGE_EDGES) + 1, 2, num_occupations, 11, 17, num_items + 1)
    return ColdStartData(user, item, rating, np.asarray(ratings.timestamp, np.int64), user_x.astype(np.float32),
                         item_x.astype(np.float32), dates, vocab, int(genres.shape[1]))


def _rng(key) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1), got {value}.")
    return value


def coldstart_split(
    key: jax.Array,
    data: ColdStartData,
    *,
    new_user_fraction: float = 0.2,
    new_item_fraction: float = 0.2,
    warm_query_fraction: float = 0.2,
) -> ColdStartSplit:
    """MeLU's user/item split: random new users, newest items, held-out warm ratings.

    Args:
      key: PRNG key for the user split (the same key gives the same split).
      data: a :class:`ColdStartData`.
      new_user_fraction: fraction of users that are new (MeLU: 20%).
      new_item_fraction: fraction of items, newest by release date, that are new.
      warm_query_fraction: fraction of each existing user's existing-item
        ratings, latest by timestamp, held out for the warm scenario (rounded
        down per user).

    Returns:
      A :class:`ColdStartSplit`.

    Example:
      >>> import jax
      >>> data = coldstart_data(synthetic_ratings(jax.random.key(0), num_users=50, num_items=80))
      >>> split = coldstart_split(jax.random.key(1), data)
      >>> int(split.new_user.sum()), int(split.new_item.sum()), bool((split.train & split.warm_query).any())
      (10, 16, False)
    """
    _check_fraction("new_user_fraction", new_user_fraction)
    _check_fraction("new_item_fraction", new_item_fraction)
    _check_fraction("warm_query_fraction", warm_query_fraction)
    num_users, num_items = data.num_users, data.num_items
    new_user = np.zeros(num_users, bool)
    new_user[_rng(key).permutation(num_users)[: int(round(new_user_fraction * num_users))]] = True

    new_item = np.zeros(num_items, bool)
    dates = data.release_date
    known = ~np.isnat(dates)
    target = int(round(new_item_fraction * num_items))
    if target > 0 and known.any():
        days = dates[known].astype(np.int64)
        # the date threshold whose "released on or after" count is closest to the target
        candidates = np.unique(days)
        counts = np.array([(days >= d).sum() for d in candidates])
        threshold = candidates[np.argmin(np.abs(counts - target))]
        new_item[known] = days >= threshold

    existing = ~new_user[data.user] & ~new_item[data.item]
    warm_query = np.zeros(data.rating.shape[0], bool)
    idx = np.flatnonzero(existing)
    order = idx[np.lexsort((data.timestamp[idx], data.user[idx]))]  # by user, then time
    users_sorted = data.user[order]
    starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
    ends = np.r_[starts[1:], order.size]
    for s, e in zip(starts, ends):
        hold = int(np.floor(warm_query_fraction * (e - s)))
        if hold:
            warm_query[order[e - hold:e]] = True
    return ColdStartSplit(new_user, new_item, existing & ~warm_query, warm_query)


def _features(data: ColdStartData, user, items, new_item_mask) -> np.ndarray:
    """x for one user's items ``[n] -> [n, D]``; new items get item id 0."""
    item_x = data.item_x[items].copy()
    item_x[:, _ITEM_COL - _NUM_USER_COLS] *= ~new_item_mask[items]
    user_x = np.broadcast_to(data.user_x[user], (len(items), _NUM_USER_COLS))
    return np.concatenate([user_x, item_x], 1)


def coldstart_episodes(
    key: jax.Array,
    data: ColdStartData,
    split: ColdStartSplit,
    *,
    scenario: str,
    support_shots: int,
    query_shots: int = 10,
    pad_support_to: Optional[int] = None,
) -> ColdStartEpisodes:
    """One test episode per eligible user of ``scenario`` (support ``K``, query up to ``Q``).

    For each user a random permutation of the user's pool (drawn from ``key``
    and the user index) gives the support set (its first ``K`` items) and the
    query set (its last ``min(Q, n - K)`` items; the warm scenario queries the
    held-out ratings instead). The same ``key`` with a larger ``K`` therefore
    keeps the smaller support sets inside the larger ones and, for users with
    ``n >= K + Q``, the very same query items, so results for different ``K``
    are comparable.

    Args:
      key: PRNG key (the same key gives the same episodes).
      data: a :class:`ColdStartData`.
      split: a :class:`ColdStartSplit` of ``data``.
      scenario: one of ``SCENARIOS``.
      support_shots: ``K``.
      query_shots: ``Q``, the most query items per user (fewer are padded and
        masked out with ``query_mask``).
      pad_support_to: pad the support set to this size with masked-out rows
        (so episodes for several ``K`` share one compiled shape).

    Returns:
      A :class:`ColdStartEpisodes`; ``episodes.support_x [E, S, D]``,
      ``support_y [E, S, 1]``, ``query_x [E, Q, D]``, ``query_y [E, Q, 1]``,
      ``support_mask [E, S]``, ``query_mask [E, Q]``.

    Raises:
      ValueError: unknown ``scenario``, non-positive sizes, or no user of the
        scenario has ``K + 1`` ratings.

    Example:
      >>> import jax
      >>> data = coldstart_data(synthetic_ratings(jax.random.key(0)))
      >>> split = coldstart_split(jax.random.key(1), data)
      >>> test = coldstart_episodes(jax.random.key(2), data, split, scenario="new_user_existing_item",
      ...                           support_shots=5)
      >>> test.episodes.support_x.shape[1:], test.episodes.query_x.shape[1:]
      ((5, 11), (10, 11))
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: expected one of {SCENARIOS}, got {scenario!r}.")
    k, q = int(support_shots), int(query_shots)
    if k < 1 or q < 1:
        raise ValueError(f"support_shots and query_shots must be positive, got {k} and {q}.")
    s = k if pad_support_to is None else int(pad_support_to)
    if s < k:
        raise ValueError(f"pad_support_to: must be at least support_shots={k}, got {s}.")
    new_u, new_i = split.new_user[data.user], split.new_item[data.item]
    if scenario == "warm":
        pool, query_pool, user_ok = split.train, split.warm_query, ~split.new_user
    else:
        want_new_user = scenario.startswith("new_user")
        want_new_item = scenario.endswith("new_item")
        pool = (new_u == want_new_user) & (new_i == want_new_item)
        query_pool, user_ok = None, split.new_user == want_new_user

    order = np.argsort(data.user, kind="stable")
    bounds = np.searchsorted(data.user[order], np.arange(data.num_users + 1))
    rows = {"sx": [], "sy": [], "si": [], "sm": [], "qx": [], "qy": [], "qi": [], "qm": [], "u": []}
    skipped = candidates = 0
    base = jax.random.key_data(key)
    for u in np.flatnonzero(user_ok):
        mine = order[bounds[u]:bounds[u + 1]]
        own = mine[pool[mine]]
        if query_pool is None:
            if own.size == 0:
                continue
            candidates += 1
            if own.size < k + 1:
                skipped += 1
                continue
            perm = own[_rng(jax.random.fold_in(jax.random.wrap_key_data(base), u)).permutation(own.size)]
            sup, qry = perm[:k], perm[max(k, perm.size - q):]
        else:
            held = mine[query_pool[mine]]
            if own.size + held.size == 0:
                continue
            candidates += 1
            if own.size < k or held.size < 1:
                skipped += 1
                continue
            rng = _rng(jax.random.fold_in(jax.random.wrap_key_data(base), u))
            sup = own[rng.permutation(own.size)][:k]
            qry = held[rng.permutation(held.size)][:q]
        for tag, idx, size in (("s", sup, s), ("q", qry, q)):
            pad = size - idx.size
            items = np.r_[data.item[idx], np.zeros(pad, np.int32)]
            x = _features(data, u, items, split.new_item)
            x[idx.size:] = 0.0
            rows[tag + "x"].append(x)
            rows[tag + "y"].append(np.r_[data.rating[idx], np.zeros(pad, np.float32)][:, None])
            rows[tag + "i"].append(items)
            rows[tag + "m"].append(np.r_[np.ones(idx.size), np.zeros(pad)].astype(np.float32))
        rows["u"].append(u)
    if skipped:
        log.info("coldstart %s K=%d: skipped %d of %d users with fewer than K+1 ratings", scenario, k, skipped,
                 candidates)
    if not rows["u"]:
        raise ValueError(f"support_shots: no user of scenario {scenario!r} has {k} + 1 ratings "
                         f"({candidates} users have some); lower support_shots.")
    st = {name: np.stack(v) for name, v in rows.items()}
    users = st["u"].astype(np.int32)
    episodes = Episode(
        jnp.asarray(st["sx"], jnp.float32), jnp.asarray(st["sy"], jnp.float32),
        jnp.asarray(st["qx"], jnp.float32), jnp.asarray(st["qy"], jnp.float32),
        support_mask=jnp.asarray(st["sm"]), query_mask=jnp.asarray(st["qm"]),
        aux={"user": jnp.asarray(users), "support_item": jnp.asarray(st["si"], jnp.int32),
             "query_item": jnp.asarray(st["qi"], jnp.int32)},
    )
    return ColdStartEpisodes(episodes, users, int(skipped), int(candidates))


def coldstart_sampler(
    data: ColdStartData,
    split: ColdStartSplit,
    *,
    num_tasks: int,
    support_shots: Union[int, Tuple[int, int]] = (5, 20),
    query_shots: int = 10,
    item_dropout: float = 0.0,
    rating_shift: float = 0.0,
) -> Callable[[jax.Array], Episode]:
    """A pure-JAX sampler of meta-training episodes (existing users, training ratings only).

    The training ratings live on the device as one padded ``[users, max
    ratings]`` table; ``sample(key)`` draws ``num_tasks`` users (uniformly, with
    replacement, among those with at least ``min K + 1`` training ratings), a
    support size ``k`` uniform in ``support_shots`` (capped at ``n - 1`` for a
    user with ``n`` ratings), a random permutation of the user's ratings, and
    takes the first ``k`` as support and the next up to ``Q`` as query. The
    support is padded to ``max K`` and masked, so one compiled step serves
    every ``k``. It can run inside :func:`jaxmeta.train.fit` with
    ``device_sampling=True``.

    Args:
      data: a :class:`ColdStartData`.
      split: a :class:`ColdStartSplit` (only ``split.train`` ratings are used).
      num_tasks: ``E``, users per batch.
      support_shots: ``K`` or an inclusive range ``(min K, max K)``.
      query_shots: ``Q``.
      item_dropout: probability of replacing an example's item id with the
        "unknown item" id 0, so the network also learns to rate an item from
        its genres and year alone (what it must do for new items).
      rating_shift: meta-augmentation (Rajendran et al., NeurIPS 2020): add
        one offset drawn uniformly from ``[-rating_shift, rating_shift]`` per
        task to all its support and query ratings. The offset can only be
        inferred from the support set, so a learner cannot fit the training
        users' ratings without adapting (it counters memorisation of the
        training users). ``0`` leaves ratings as they are.

    Returns:
      ``sample(key) -> Episode`` with ``support_x [E, max K, D]``, ``support_y
      [E, max K, 1]``, ``query_x [E, Q, D]``, ``query_y [E, Q, 1]`` and masks.

    Raises:
      ValueError: bad sizes, or no training user has ``min K + 1`` ratings.

    Example:
      >>> import jax
      >>> data = coldstart_data(synthetic_ratings(jax.random.key(0)))
      >>> split = coldstart_split(jax.random.key(1), data)
      >>> sample = coldstart_sampler(data, split, num_tasks=32, support_shots=(5, 20))
      >>> sample(jax.random.key(2)).support_x.shape
      (32, 20, 11)
    """
    if isinstance(support_shots, (tuple, list)):
        k_min, k_max = (int(v) for v in support_shots)
    else:
        k_min = k_max = int(support_shots)
    num_tasks, q = int(num_tasks), int(query_shots)
    if not 1 <= k_min <= k_max:
        raise ValueError(f"support_shots: expected K >= 1 or (min, max) with 1 <= min <= max, got {support_shots}.")
    if num_tasks < 1 or q < 1:
        raise ValueError(f"num_tasks and query_shots must be positive, got {num_tasks} and {q}.")
    item_dropout = _check_fraction("item_dropout", item_dropout)
    rating_shift = float(rating_shift)
    if not rating_shift >= 0.0:
        raise ValueError(f"rating_shift: expected a non-negative offset range, got {rating_shift}.")
    idx = np.flatnonzero(split.train)
    users, counts = np.unique(data.user[idx], return_counts=True)
    keep = counts >= k_min + 1
    if not keep.any():
        raise ValueError(f"support_shots: no training user has {k_min} + 1 ratings; lower the minimum K.")
    dropped = int((~keep).sum())
    if dropped:
        log.info("coldstart sampler: skipped %d of %d training users with fewer than %d ratings", dropped,
                 users.size, k_min + 1)
    users, counts = users[keep], counts[keep]
    width = int(counts.max())
    table_item = np.zeros((users.size, width), np.int32)
    table_rating = np.zeros((users.size, width), np.float32)
    slot = {u: i for i, u in enumerate(users)}
    fill = np.zeros(users.size, np.int64)
    for r in idx:
        i = slot.get(int(data.user[r]))
        if i is None:
            continue
        table_item[i, fill[i]] = data.item[r]
        table_rating[i, fill[i]] = data.rating[r]
        fill[i] += 1
    table_item, table_rating = jnp.asarray(table_item), jnp.asarray(table_rating)
    counts_j, users_j = jnp.asarray(counts, jnp.int32), jnp.asarray(users, jnp.int32)
    user_x, item_x = jnp.asarray(data.user_x), jnp.asarray(data.item_x)
    item_col = _ITEM_COL - _NUM_USER_COLS

    def one(key):
        k_user, k_size, k_perm, k_drop, k_shift = jax.random.split(key, 5)
        shift = jax.random.uniform(k_shift, (), minval=-rating_shift, maxval=rating_shift)
        row = jax.random.randint(k_user, (), 0, users.size)
        n = counts_j[row]
        size = jnp.minimum(jax.random.randint(k_size, (), k_min, k_max + 1), n - 1)
        noise = jnp.where(jnp.arange(width) < n, jax.random.uniform(k_perm, (width,)), 2.0)
        perm = jnp.argsort(noise)
        pos_s = jnp.arange(k_max)
        pos_q = size + jnp.arange(q)
        take_s, take_q = perm[pos_s], perm[jnp.minimum(pos_q, width - 1)]
        mask_s = (pos_s < size).astype(jnp.float32)
        mask_q = (pos_q < n).astype(jnp.float32)

        def build(take, mask, k):
            items = table_item[row, take]
            ix = item_x[items]
            keep_id = jax.random.bernoulli(k, 1.0 - item_dropout, (take.shape[0],))
            ix = ix.at[:, item_col].multiply(keep_id.astype(ix.dtype))
            ux = jnp.broadcast_to(user_x[users_j[row]], (take.shape[0], user_x.shape[1]))
            x = jnp.concatenate([ux, ix], 1) * mask[:, None]
            y = ((table_rating[row, take] + shift) * mask)[:, None]
            return x, y

        ks, kq = jax.random.split(k_drop)
        sx, sy = build(take_s, mask_s, ks)
        qx, qy = build(take_q, mask_q, kq)
        return Episode(sx, sy, qx, qy, support_mask=mask_s, query_mask=mask_q)

    def sample(key):
        return jax.vmap(one)(jax.random.split(key, num_tasks))

    return sample
