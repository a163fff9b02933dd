"""Map any lab's cell-type labels onto the unified ontology.

How a label is read (see :mod:`immunegym.ontology.synonyms` for the vocabulary):

1. Split camelCase ("TfhTh1"), lower-case, rewrite multi-word phrases to one token
   ("regulatory T" -> ``treg``), drop markers written as negative ("CD4-"), split on
   anything that is not a letter or digit, and ignore cluster codes ("c12").
2. Junk words ("Doublets", "low quality") make the label ``None`` whatever else it says;
   "Unknown"/"Other" make it ``None`` only when nothing else is said.
3. Name tokens point at nodes. Names on one root-to-leaf path refine each other
   ("CD8" + "exhausted" -> ``cd8_exhausted``); names on different branches mean the label
   names a mixture, which maps to their lowest common parent ("T/NK" -> ``lymphoid``).
   A name that fits several nodes ("memory": CD8 memory or CD4 helper) keeps only the
   candidates below what the rest of the label reached.
4. Marker genes then choose among the children of the node reached, one level at a time
   ("Macro_SPP1" -> ``macrophage_m2``); they never move a label into another lineage.

Every distinct label is resolved once, so a million per-cell labels cost as much as their
few hundred distinct values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from immunegym.ontology.conventions import get_convention
from immunegym.ontology.synonyms import (
    CLUSTER_ID,
    COMPILED_PHRASES,
    MARKERS,
    NAMES,
    NEGATIVE_MARKER,
    STRONG_JUNK,
    WEAK_JUNK,
)
from immunegym.ontology.tree import CellOntology, default_ontology

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^a-z0-9]+")

# Confidence of each rule: how directly the label says where it belongs.
RULE_CONFIDENCE: dict[str, float] = {
    "name": 1.0,  # names on one path, nothing else needed
    "name+marker": 0.9,  # names, then marker genes chose a child
    "mixture": 0.8,  # the label names cell types on different branches
    "marker": 0.6,  # only marker genes, no cell-type name
    "outside": 0.5,  # a real cell type with no node of its own: counted at the root
    "junk": 0.0,  # not a cell to count (doublets, low quality, unknown)
    "unmapped": 0.0,  # nothing in the label was recognised
    "missing": 0.0,  # the label is missing (None / NaN)
}


class UnmappedLabelError(ValueError):
    """Raised in strict mode when labels cannot be mapped to any ontology node."""


@dataclass(frozen=True)
class LabelMatch:
    """How one distinct label was mapped.

    Attributes
    ----------
    label
        The label as given.
    node
        Ontology node id, or ``None`` for junk, missing and unmapped labels.
    rule
        Which rule decided: a key of :data:`RULE_CONFIDENCE`.
    confidence
        The rule's confidence in [0, 1].
    evidence
        The tokens that mattered, as ``token->node`` (names) and ``token~node`` (markers).
    translated
        The text actually read when a convention or alias table translated the label.
    """

    label: str
    node: str | None
    rule: str
    confidence: float
    evidence: tuple[str, ...] = ()
    translated: str | None = None


def tokenize(label: str) -> list[str]:
    """The canonical tokens of a label (step 1 of the module docstring)."""
    # "_" is a separator here, but a word character to regex \b: make it a space first.
    text = _CAMEL.sub(" ", label).replace("_", " ").lower()
    for pattern, replacement in COMPILED_PHRASES:
        text = pattern.sub(replacement, text)
    text = NEGATIVE_MARKER.sub(" ", text)
    return [t for t in _SPLIT.split(text) if t]


def _vocabulary_key(token: str) -> str | None:
    """The vocabulary entry a token stands for, accepting simple plurals."""
    candidates = [token]
    if len(token) > 2 and token.endswith("s"):
        candidates.append(token[:-1])
        if token.endswith("es"):
            candidates.append(token[:-2])
    vocab = (NAMES, MARKERS, STRONG_JUNK, WEAK_JUNK)
    return next((c for c in candidates if any(c in v for v in vocab)), None)


@dataclass
class _Evidence:
    names: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    markers: list[tuple[str, tuple[tuple[str, int], ...]]] = field(default_factory=list)
    strong_junk: bool = False
    weak_junk: bool = False


def _collect(tokens: Sequence[str]) -> _Evidence:
    ev = _Evidence()
    for token in tokens:
        key = _vocabulary_key(token)
        if key is None:
            continue  # unknown words and cluster codes carry no evidence
        if CLUSTER_ID.match(key) and key not in NAMES and key not in MARKERS:
            continue
        if key in STRONG_JUNK:
            ev.strong_junk = True
        if key in WEAK_JUNK:
            ev.weak_junk = True
        if NAMES.get(key):
            ev.names.append((key, NAMES[key]))
        if key in MARKERS:
            ev.markers.append((key, MARKERS[key]))
    return ev


class Harmonizer:
    """Maps labels to ontology nodes; one instance caches every label it has seen.

    Parameters
    ----------
    ontology
        The ontology to map onto; the package default when ``None``.
    convention
        Name of a published code convention (e.g. ``"sade_feldman_2018"`` for "G1".."G11")
        whose codes are translated into words before matching.
    aliases
        Extra label -> text translations (case-insensitive on the label), applied after
        the convention. Use it for a lab's private codes.
    """

    def __init__(
        self,
        ontology: CellOntology | None = None,
        convention: str | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.ontology = ontology or default_ontology()
        table: dict[str, str] = {}
        if convention is not None:
            table.update({k.lower(): v for k, v in get_convention(convention).items()})
        if aliases:
            table.update({str(k).lower(): str(v) for k, v in aliases.items()})
        self._aliases = table
        self._cache: dict[str, LabelMatch] = {}
        unknown = {n for cands in NAMES.values() for n in cands} | {
            n for entries in MARKERS.values() for n, _ in entries
        }
        unknown -= set(self.ontology.ids)
        if unknown:
            raise ValueError(
                f"the synonym tables name nodes {sorted(unknown)} that the ontology lacks"
            )

    # ------------------------------------------------------------------ one label
    def match(self, label: str) -> LabelMatch:
        """Map one label (cached)."""
        cached = self._cache.get(label)
        if cached is None:
            cached = self._match_uncached(label)
            self._cache[label] = cached
        return cached

    def _match_uncached(self, label: str) -> LabelMatch:
        if not label.strip():
            return LabelMatch(label, None, "missing", RULE_CONFIDENCE["missing"])
        translated = self._aliases.get(label.strip().lower())
        ev = _collect(tokenize(translated if translated is not None else label))

        def result(node: str | None, rule: str, evidence: Sequence[str] = ()) -> LabelMatch:
            return LabelMatch(label, node, rule, RULE_CONFIDENCE[rule], tuple(evidence),
                              translated)

        if ev.strong_junk:
            return result(None, "junk")
        candidate_sets = [cands for _, cands in ev.names]
        evidence = [f"{tok}->{'|'.join(cands)}" for tok, cands in ev.names]
        marker_only = not candidate_sets
        if marker_only:
            if not ev.markers:
                return result(None, "junk" if ev.weak_junk else "unmapped")
            candidate_sets = [tuple(n for n, _ in entries) for _, entries in ev.markers]
        node, mixture = self._resolve(candidate_sets)
        node, refined_by = self._refine(node, ev.markers)
        evidence += [f"{tok}~{child}" for tok, child in refined_by]
        if node == self.ontology.root:
            rule = "outside"
        elif marker_only:
            rule = "marker"
        elif mixture:
            rule = "mixture"
        elif refined_by:
            rule = "name+marker"
        else:
            rule = "name"
        return result(node, rule, evidence)

    def _chain_or_common_parent(self, nodes: Sequence[str]) -> tuple[str, bool]:
        """Deepest node if all lie on one path, else their lowest common ancestor."""
        onto = self.ontology
        deepest = max(nodes, key=onto.depth)
        if all(onto.is_ancestor(n, deepest) for n in nodes):
            return deepest, False
        return onto.lowest_common_ancestor(nodes), True

    def _resolve(self, candidate_sets: Sequence[tuple[str, ...]]) -> tuple[str, bool]:
        onto = self.ontology
        definite = [c[0] for c in candidate_sets if len(c) == 1]
        vague = [c for c in candidate_sets if len(c) > 1]
        base, mixture = self._chain_or_common_parent(definite) if definite else (None, False)
        targets = []
        for cands in vague:
            if base is None:
                targets.append(onto.lowest_common_ancestor(cands))
                continue
            # Keep the readings that refine what the label already says; drop the others.
            below = [c for c in cands if c != base and onto.is_ancestor(base, c)]
            if below:
                targets.append(onto.lowest_common_ancestor(below))
        if targets:
            target, target_mixture = self._chain_or_common_parent(targets)
            mixture |= target_mixture
            if base is None or onto.is_ancestor(base, target):
                base = target
        assert base is not None
        return base, mixture

    def _refine(
        self, node: str, markers: Sequence[tuple[str, tuple[tuple[str, int], ...]]]
    ) -> tuple[str, list[tuple[str, str]]]:
        onto = self.ontology
        used: list[tuple[str, str]] = []
        while not onto.is_leaf(node):
            scores: dict[str, int] = {}
            voters: dict[str, list[str]] = {}
            for token, entries in markers:
                for child, strength in entries:
                    if onto.parent(child) == node:
                        scores[child] = scores.get(child, 0) + strength
                        voters.setdefault(child, []).append(token)
            if not scores:
                break
            ranked = sorted(scores.values(), reverse=True)
            if len(ranked) > 1 and ranked[0] == ranked[1]:
                break  # markers disagree: stay at the parent
            node = max(scores, key=scores.__getitem__)
            used += [(token, node) for token in voters[node]]
        return node, used

    # ------------------------------------------------------------------ many labels
    def harmonize(self, labels: Sequence[object], strict: bool = False) -> HarmonizationReport:
        """Map a sequence of labels (per cell, with repeats); see :func:`harmonize_labels`."""
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object), use_na_sentinel=True)
        matches = [self.match(str(u)) for u in uniques]
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        n_missing = int((codes < 0).sum())
        report = HarmonizationReport(matches, counts, codes, n_missing, self.ontology)
        if strict and report.unmapped:
            raise UnmappedLabelError(
                f"labels: {len(report.unmapped)} label(s) match no ontology node in strict "
                f"mode: {report.unmapped[:20]}; expected cell-type names or codes of a known "
                "convention (pass convention= or aliases=, or strict=False to map them to None)"
            )
        return report


@dataclass
class HarmonizationReport:
    """The result of harmonizing a label column.

    Attributes
    ----------
    matches
        One :class:`LabelMatch` per distinct label, in order of first appearance.
    counts
        How many inputs carried each distinct label.
    codes
        Per input, the index into ``matches`` (``-1`` for a missing value).
    n_missing
        Inputs that were ``None``/NaN.
    ontology
        The ontology the nodes belong to.
    """

    matches: list[LabelMatch]
    counts: np.ndarray
    codes: np.ndarray
    n_missing: int
    ontology: CellOntology

    @property
    def nodes(self) -> list[str | None]:
        """Node id per input, in input order."""
        table = np.array([m.node for m in self.matches] + [None], dtype=object)
        return table[self.codes].tolist()

    @property
    def mapping(self) -> dict[str, str | None]:
        """Distinct label -> node id."""
        return {m.label: m.node for m in self.matches}

    @property
    def unmapped(self) -> list[str]:
        """Distinct labels in which nothing was recognised."""
        return [m.label for m in self.matches if m.rule == "unmapped"]

    @property
    def junk(self) -> list[str]:
        """Distinct labels recognised as not-a-cell-to-count."""
        return [m.label for m in self.matches if m.rule == "junk"]

    @property
    def mapped_fraction(self) -> float:
        """Fraction of all inputs that received a node."""
        total = int(self.counts.sum()) + self.n_missing
        mapped = sum(
            int(c) for m, c in zip(self.matches, self.counts, strict=True) if m.node is not None
        )
        return mapped / total if total else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row per distinct label: node, CL id and label, rule, confidence, count."""
        rows = []
        for m, n in zip(self.matches, self.counts, strict=True):
            spec = self.ontology.node(m.node) if m.node is not None else None
            rows.append({
                "label": m.label,
                "n_cells": int(n),
                "node": m.node,
                "cl_id": spec.cl_id if spec else None,
                "cl_label": spec.cl_label if spec else None,
                "rule": m.rule,
                "confidence": m.confidence,
                "evidence": " ".join(m.evidence),
                "translated": m.translated,
            })
        return pd.DataFrame(rows)


def harmonization_report(
    labels: Sequence[object],
    *,
    convention: str | None = None,
    aliases: Mapping[str, str] | None = None,
    strict: bool = False,
    ontology: CellOntology | None = None,
) -> HarmonizationReport:
    """Harmonize labels and return the full report (node, CL id, rule, confidence, unmapped).

    Parameters are those of :func:`harmonize_labels`.
    """
    harmonizer = Harmonizer(ontology=ontology, convention=convention, aliases=aliases)
    return harmonizer.harmonize(labels, strict=strict)


def harmonize_labels(
    labels: Sequence[str],
    *,
    convention: str | None = None,
    aliases: Mapping[str, str] | None = None,
    strict: bool = False,
    ontology: CellOntology | None = None,
) -> list[str | None]:
    """Map cell-type labels to unified ontology node ids, in input order.

    Parameters
    ----------
    labels
        Labels in any lab's convention; repeats are cheap (each distinct label is read once).
        ``None``/NaN give ``None``.
    convention
        A published code convention to translate first, e.g. ``"sade_feldman_2018"``.
    aliases
        Extra label -> text translations for a lab's private codes.
    strict
        Raise :class:`UnmappedLabelError` when any label is unrecognised (junk such as
        "Doublets" is still allowed and maps to ``None``).
    ontology
        The ontology to map onto; the package default when ``None``.

    Returns
    -------
    list of str or None
        The most specific node each label implies; the common parent for a label that names
        a mixture; ``None`` for junk, missing and (when not strict) unrecognised labels.

    Examples
    --------
    >>> harmonize_labels(["CD8.c12.Tex.CXCL13", "Macro_SPP1", "T/NK cells", "Doublets"])
    ['cd8_tex', 'macrophage_m2', 'lymphoid', None]
    """
    return harmonization_report(
        labels, convention=convention, aliases=aliases, strict=strict, ontology=ontology
    ).nodes
