"""Checkpoints of any state pytree with orbax, restored onto the exact structure.

orbax restores NamedTuples (``MetaState``, optax states) as plain tuples; we
restore the leaves and rebuild them on the template's tree structure, so a
restored state is the same pytree type as the one saved.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np

__all__ = ["Checkpointer"]


def _require_orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "checkpointing needs orbax: pip install 'jaxmeta[checkpoint]' (or pass workdir=None to fit "
            "to train without checkpoints)."
        ) from err
    return ocp


class Checkpointer:
    """Saves and restores a state pytree under ``directory/<step>/`` with orbax.

    Writes are atomic (orbax writes to a temporary folder and renames it), so a
    run killed mid-save leaves the previous checkpoint intact.

    Args:
      directory: where checkpoints live (created if missing).
      max_to_keep: how many recent checkpoints to keep.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> ckpt = Checkpointer(tempfile.mkdtemp())
      >>> ckpt.save(5, {"w": jnp.ones(2)})
      >>> ckpt.latest_step()
      5
      >>> ckpt.restore({"w": jnp.zeros(2)})["w"]
      Array([1., 1.], dtype=float32)
      >>> ckpt.close()
    """

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        ocp = _require_orbax()
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def latest_step(self) -> Optional[int]:
        """The newest saved step, or ``None``."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Saves ``state`` as step ``step`` and waits until it is on disk."""
        self._manager.save(int(step), args=self._ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: Optional[int] = None) -> Any:
        """Restores step ``step`` (default: the latest) onto ``template``'s structure.

        Raises:
          FileNotFoundError: no checkpoint exists.
          ValueError: the checkpoint does not match the template (a different
            learner, network or optimizer wrote it).
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}.")
        abstract = jax.tree_util.tree_map(self._ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoint {self.directory}/{step} does not match the current state (different learner, "
                f"network or optimizer?): {err}. Use a fresh workdir or the original configuration."
            ) from err
        leaves = jax.tree_util.tree_leaves(restored)
        t_leaves, treedef = jax.tree_util.tree_flatten(template)
        if len(leaves) != len(t_leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(leaves, t_leaves)):
            raise ValueError(
                f"checkpoint {self.directory}/{step} holds {len(leaves)} arrays that do not match the "
                f"{len(t_leaves)} of the current state; use a fresh workdir or the original configuration."
            )
        return treedef.unflatten(leaves)

    def close(self) -> None:
        self._manager.close()
