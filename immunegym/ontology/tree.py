"""The ontology tree: navigation, levels, and reading compositions at any depth.

Mass is counted where a label puts it. A cell labeled "T cell" is a direct count on the
``t_cell`` node, not spread over its leaves. Reading a composition at a level sums each
level node's subtree; direct mass *above* the level stays visible as its own column
(:meth:`CellOntology.aggregate`). Splitting such mass over the leaves is an explicit step
with a stated prior (:meth:`CellOntology.split_to_leaves`), never a silent default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache, cached_property
from typing import Literal

import numpy as np

from immunegym.ontology.nodes import LEVEL_SPECS, NODE_SPECS, NodeSpec
from immunegym.validation import ValidationError, bad, choice, did_you_mean, number

SplitPrior = Literal["observed", "uniform"]


class CellOntology:
    """A rooted tree of cell-type nodes.

    Parameters
    ----------
    specs
        Node rows, parents listed before children (see :data:`NODE_SPECS`).
    levels
        Named antichains of node ids that cover every leaf exactly once.

    Raises
    ------
    ValueError
        If ids repeat, a parent is unknown or listed after its child, there is not exactly
        one root, or a level does not partition the leaves.
    """

    def __init__(
        self,
        specs: Sequence[NodeSpec] = NODE_SPECS,
        levels: Mapping[str, Sequence[str]] = LEVEL_SPECS,
    ) -> None:
        self._specs: dict[str, NodeSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ValidationError(f"node id {spec.id!r} appears twice; ids must be unique")
            if spec.parent is not None and spec.parent not in self._specs:
                raise ValidationError(
                    f"node {spec.id!r} has parent {spec.parent!r}, which is not defined before "
                    "it; list parents before children"
                )
            self._specs[spec.id] = spec
        roots = [s.id for s in specs if s.parent is None]
        if len(roots) != 1:
            raise ValidationError(f"the ontology needs exactly one root node, got {roots}")
        self.root: str = roots[0]
        self._children: dict[str, list[str]] = {i: [] for i in self._specs}
        for spec in specs:
            if spec.parent is not None:
                self._children[spec.parent].append(spec.id)
        self._levels = {"fine": tuple(self.leaves)}
        for name, nodes in levels.items():
            self._check_level(name, nodes)
            self._levels[name] = tuple(nodes)

    # ------------------------------------------------------------------ navigation
    @property
    def ids(self) -> list[str]:
        """All node ids, parents before children."""
        return list(self._specs)

    def __contains__(self, node: object) -> bool:
        return node in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def node(self, node: str) -> NodeSpec:
        """The row of ``node``; raises ``KeyError`` naming valid ids when unknown."""
        try:
            return self._specs[node]
        except KeyError:
            raise KeyError(
                f"unknown ontology node {node!r}; expected one of {sorted(self._specs)}"
            ) from None

    def parent(self, node: str) -> str | None:
        """Parent id, ``None`` for the root."""
        return self.node(node).parent

    def children(self, node: str) -> list[str]:
        """Direct children in table order."""
        self.node(node)
        return list(self._children[node])

    def is_leaf(self, node: str) -> bool:
        """Whether ``node`` has no children."""
        return not self.children(node)

    @cached_property
    def leaves(self) -> list[str]:
        """Leaf ids in table order (the fine level)."""
        return [i for i in self._specs if not self._children[i]]

    def ancestors(self, node: str, include_self: bool = False) -> list[str]:
        """Ids from ``node`` (optionally) up to the root, nearest first."""
        out = [node] if include_self else []
        current = self.parent(node)
        while current is not None:
            out.append(current)
            current = self.parent(current)
        return out

    def descendants(self, node: str, include_self: bool = False) -> list[str]:
        """All ids below ``node`` in table order."""
        out = [node] if include_self else []
        stack = list(reversed(self.children(node)))
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(self._children[current]))
        return out

    def leaves_under(self, node: str) -> list[str]:
        """Leaf ids in the subtree of ``node`` (itself if it is a leaf)."""
        return [i for i in self.descendants(node, include_self=True) if not self._children[i]]

    def depth(self, node: str) -> int:
        """Edges from the root (root has depth 0)."""
        return len(self.ancestors(node))

    def is_ancestor(self, ancestor: str, node: str) -> bool:
        """Whether ``ancestor`` is ``node`` or lies above it."""
        return ancestor in self.ancestors(node, include_self=True)

    def comparable(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` lie on one root-to-leaf path."""
        return self.is_ancestor(a, b) or self.is_ancestor(b, a)

    def lowest_common_ancestor(self, nodes: Iterable[str]) -> str:
        """The deepest node that is an ancestor-or-self of every node given."""
        nodes = list(nodes)
        if not nodes:
            raise ValidationError("lowest_common_ancestor needs at least one node")
        common = self.ancestors(nodes[0], include_self=True)
        for other in nodes[1:]:
            keep = set(self.ancestors(other, include_self=True))
            common = [n for n in common if n in keep]
        return common[0]

    # ------------------------------------------------------------------ levels
    @property
    def level_names(self) -> list[str]:
        """Names accepted by :meth:`level`."""
        return list(self._levels)

    def level(self, level: str | Sequence[str]) -> tuple[str, ...]:
        """The node ids of a named level, or a custom antichain after checking it.

        Raises
        ------
        ValidationError
            An unknown level name (listing the known ones), a custom level naming unknown
            nodes, or one that does not cover every leaf exactly once.
        """
        if isinstance(level, str):
            if level not in self._levels:
                raise bad("level", level, f"one of {self.level_names} or a sequence of node ids"
                          + did_you_mean(level, self.level_names))
            return self._levels[level]
        if isinstance(level, bytes | Mapping) or not isinstance(level, Iterable):
            raise bad("level", level, f"one of {self.level_names} or a sequence of node ids")
        nodes = tuple(level)
        for i, node in enumerate(nodes):
            if not isinstance(node, str) or node not in self._specs:
                raise bad(f"level[{i}]", node, "an ontology node id" + (
                    did_you_mean(node, list(self._specs)) if isinstance(node, str) else ""))
        self._check_level("custom", nodes)
        return nodes

    def _check_level(self, name: str, nodes: Sequence[str]) -> None:
        covered: dict[str, str] = {}
        for node in nodes:
            for leaf in self.leaves_under(node):
                if leaf in covered:
                    raise ValidationError(
                        f"level {name!r}: nodes {covered[leaf]!r} and {node!r} overlap at "
                        f"{leaf!r}; a level must cover each leaf exactly once"
                    )
                covered[leaf] = node
        missing = [leaf for leaf in self.leaves if leaf not in covered]
        if missing:
            raise ValidationError(f"level {name!r} does not cover the leaves {missing}; a "
                                  "level must cover each leaf exactly once")

    # ------------------------------------------------------------------ compositions
    def aggregate(
        self, counts: np.ndarray, nodes: Sequence[str], level: str | Sequence[str] = "fine"
    ) -> tuple[np.ndarray, list[str]]:
        """Read direct per-node counts at a level.

        Parameters
        ----------
        counts
            ``(..., len(nodes))`` direct counts: cells labeled exactly at each node.
        nodes
            The node id of each column of ``counts``.
        level
            A level name or a custom antichain.

        Returns
        -------
        values, columns
            Each level node gets the sum of its subtree. Mass labeled at a node *above*
            the level (say "T cell" when reading "fine") cannot be assigned to one level
            node, so it stays in a column of its own, named by that node, appended after
            the level nodes; only such columns with mass anywhere in ``counts`` appear.
        """
        counts = self._check_counts(counts, nodes)
        level_nodes = self.level(level)
        index = {n: i for i, n in enumerate(level_nodes)}
        target: dict[str, int] = {}
        for node in nodes:
            home = next((a for a in self.ancestors(node, include_self=True) if a in index), None)
            target[node] = index[home] if home is not None else -1
        out = np.zeros((*counts.shape[:-1], len(level_nodes)))
        above: dict[str, np.ndarray] = {}
        for i, node in enumerate(nodes):
            if target[node] >= 0:
                out[..., target[node]] += counts[..., i]
            elif np.any(counts[..., i] != 0):
                above[node] = counts[..., i]
        columns = list(level_nodes) + list(above)
        if above:
            out = np.concatenate([out, np.stack(list(above.values()), axis=-1)], axis=-1)
        return out, columns

    def split_to_leaves(
        self,
        counts: np.ndarray,
        nodes: Sequence[str],
        prior: SplitPrior | Mapping[str, float] = "observed",
    ) -> np.ndarray:
        """Turn direct per-node counts into counts over the leaves, splitting coarse mass.

        This is the one place where mass labeled at a coarse node is spread over leaves,
        and the prior says how.

        Parameters
        ----------
        counts
            ``(..., len(nodes))`` direct counts.
        nodes
            Node id of each column.
        prior
            ``"observed"``: split each coarse node's mass in proportion to the same row's
            leaf counts under it (uniform where that row has none); ``"uniform"``: equal
            shares; a mapping leaf id -> weight: those weights (leaves not named get 0,
            uniform where all weights under the node are 0).

        Returns
        -------
        numpy.ndarray
            ``(..., n_leaves)`` counts in :attr:`leaves` order; the row totals are kept.
        """
        counts = self._check_counts(counts, nodes)
        prior = self.check_prior(prior)
        leaf_index = {leaf: i for i, leaf in enumerate(self.leaves)}
        out = np.zeros((*counts.shape[:-1], len(self.leaves)))
        for i, node in enumerate(nodes):
            if node in leaf_index:
                out[..., leaf_index[node]] += counts[..., i]
        resolved = out.copy()  # leaf counts before any split: the "observed" prior
        for i, node in enumerate(nodes):
            if node in leaf_index:
                continue
            cols = [leaf_index[leaf] for leaf in self.leaves_under(node)]
            if prior == "observed":
                weights = resolved[..., cols]
            elif prior == "uniform":
                weights = np.ones((*counts.shape[:-1], len(cols)))
            else:
                w = np.array([prior.get(self.leaves[c], 0.0) for c in cols], dtype=float)
                weights = np.broadcast_to(w, (*counts.shape[:-1], len(cols))).copy()
            total = weights.sum(axis=-1, keepdims=True)
            shares = np.where(total > 0, weights / np.where(total > 0, total, 1.0),
                              1.0 / len(cols))
            out[..., cols] += shares * counts[..., i : i + 1]
        return out

    def check_prior(
        self, prior: object, field: str = "prior"
    ) -> SplitPrior | dict[str, float]:
        """A split prior, checked: ``"observed"``, ``"uniform"``, or leaf weights.

        Weights are a mapping leaf id -> weight, or a sequence with one weight per leaf in
        :attr:`leaves` order; each finite and >= 0.

        Raises
        ------
        ValidationError
            An unknown prior name, a weight that is negative, NaN or not a number, a key that
            is not a leaf, or a sequence of the wrong length.
        """
        expected = ("'observed', 'uniform', a mapping leaf id -> weight, or one weight per "
                    f"leaf ({len(self.leaves)})")
        if isinstance(prior, str):
            return choice(field, prior, ["observed", "uniform"])  # type: ignore[return-value]
        if isinstance(prior, Mapping):
            unknown = [k for k in prior if k not in self.leaves]
            if unknown:
                raise bad(field, dict(prior), f"leaf ids as keys; {unknown} are not leaves "
                          f"(leaves: {self.leaves})")
            return {k: number(f"{field}[{k!r}]", w, low=0.0) for k, w in prior.items()}
        if isinstance(prior, bytes) or not isinstance(prior, Iterable):
            raise bad(field, prior, expected)
        weights = list(np.asarray(prior, dtype=object).ravel()) if isinstance(
            prior, np.ndarray) else list(prior)  # type: ignore[call-overload]
        if len(weights) != len(self.leaves):
            raise bad(field, f"<{len(weights)} weights>", expected)
        return {leaf: number(f"{field}[{leaf!r}]", w if not isinstance(w, np.generic)
                             else w.item(), low=0.0)
                for leaf, w in zip(self.leaves, weights, strict=True)}

    @staticmethod
    def _check_counts(counts: object, nodes: Sequence[str]) -> np.ndarray:
        try:
            values = np.asarray(counts, dtype=float)
        except (TypeError, ValueError):
            raise bad("counts", counts, "a numeric array (..., len(nodes))") from None
        if values.ndim == 0 or values.shape[-1] != len(nodes):
            raise bad("counts", f"<array of shape {values.shape}>",
                      f"a last dimension of {len(nodes)} (one column per node)")
        if not np.isfinite(values).all():
            raise bad("counts", f"<array with {int((~np.isfinite(values)).sum())} non-finite "
                      "values>", "finite counts")
        return values

    # ------------------------------------------------------------------ display
    def render(self) -> str:
        """An indented text view of the tree with CL ids."""
        lines = []
        for node in self.descendants(self.root, include_self=True):
            spec = self._specs[node]
            lines.append(f"{'  ' * self.depth(node)}{node}  [{spec.cl_id} {spec.cl_label}]")
        return "\n".join(lines)




@cache
def default_ontology() -> CellOntology:
    """The package's unified TIME ontology (built once, shared; treat it as read-only)."""
    return CellOntology()
