"""Dataclasses of tensors with a leading patient axis, handled as one tree.

ImmuneSim's state is a frozen dataclass of tensors (brax style) with a nested toxicity state;
these helpers index, move, concatenate and copy such trees leaf by leaf.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch


def tree_map(fn, *trees):
    """Apply ``fn`` to the tensors of one or more dataclasses of tensors, leaf by leaf.

    Fields that are themselves dataclasses of tensors (``SimState.tox``) are mapped
    recursively, so a state can be indexed, moved, concatenated and copied as one tree.
    """
    first = trees[0]
    out = {}
    for f in fields(first):
        values = [getattr(t, f.name) for t in trees]
        if isinstance(values[0], torch.Tensor):
            out[f.name] = fn(*values)
        else:
            out[f.name] = tree_map(fn, *values)
    return replace(first, **out)


def tree_leaves(tree) -> list[torch.Tensor]:
    """Every tensor of a (nested) dataclass of tensors."""
    leaves = []
    for f in fields(tree):
        value = getattr(tree, f.name)
        leaves.extend([value] if isinstance(value, torch.Tensor) else tree_leaves(value))
    return leaves


class TensorTree:
    """Shared helpers for dataclasses whose fields are tensors with a leading batch axis."""

    def to(self, device: torch.device | str):
        return tree_map(lambda t: t.to(device), self)

    def index(self, rows: torch.Tensor | slice):
        """The patients at ``rows`` (a slice, index tensor or boolean mask)."""
        return tree_map(lambda t: t[rows], self)

    @classmethod
    def concat(cls, items):
        return tree_map(lambda *ts: torch.cat(ts), *items)

    def put(self, rows: torch.Tensor, values):
        """A copy with ``rows`` replaced by ``values`` (new tensors; ``self`` is untouched)."""
        def put_leaf(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            t[rows] = v
            return t

        return tree_map(put_leaf, self, values)

    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for t in tree_leaves(self))

    @property
    def n(self) -> int:
        return int(tree_leaves(self)[0].shape[0])

    def __repr__(self) -> str:
        # One line of sizes: the default dataclass repr would print every tensor.
        leaves = tree_leaves(self)
        device = leaves[0].device if leaves else "cpu"
        return (f"{type(self).__name__}(n={self.n if leaves else 0}, {len(leaves)} tensors, "
                f"{self.nbytes() / 1024:,.1f} KiB on {device})")
