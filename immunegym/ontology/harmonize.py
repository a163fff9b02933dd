"""Map any lab's cell-type labels onto the unified ontology.

How a label is read (see :mod:`immunegym.ontology.synonyms` for the vocabulary):

1. Decode bytes (UTF-8), split camelCase ("TfhTh1"), lower-case, rewrite multi-word
   phrases to one token ("regulatory T" -> ``treg``), split on anything that is not a
   letter or digit, and ignore cluster codes ("c12"). Words the label *negates* are set
   apart (:func:`read_label`): "non-X", "not X", "lacking X", "X-negative", "X neg",
   "X-"/"X−" and, for marker genes, "X low"/"Xlo".
2. Junk words ("Doublets", "low quality") make the label ``None`` whatever else it says;
   "Unknown"/"Other" make it ``None`` only when nothing else is said.
3. Name tokens point at nodes. Names on one root-to-leaf path refine each other
   ("CD8" + "exhausted" -> ``cd8_exhausted``); names on different branches mean the label
   names a mixture, which maps to their lowest common parent ("T/NK" -> ``lymphoid``).
   A name that fits several nodes ("memory": CD8 memory or CD4 helper) keeps only the
   candidates below what the rest of the label reached.
4. Marker genes then choose among the children of the node reached, one level at a time
   ("Macro_SPP1" -> ``macrophage_m2``); they never move a label into another lineage.
5. Negated words rule children out; they never add evidence. "PD1-negative CD8 T cells"
   rules out the exhausted branch, which leaves memory and effector: the label stays on
   ``cd8_t`` (PD-1-negative is not a state of its own). Only where a node's children
   partition it (:data:`~immunegym.ontology.nodes.CLOSED_NODES`) does ruling out all but
   one name the last ("non-Treg CD4" -> ``cd4_helper``, "TIM-3-negative exhausted CD8" ->
   ``cd8_tpex``). A label that only says what the cells are not maps to what remains:
   "non-immune" (malignant, stromal and unlisted cells) has no node of its own and is
   counted on the root ``cell`` (rule ``negation``) rather than dropped, so the immune
   fraction stays right. A label that denies its own lineage ("CD3- CD8+") is unmapped.

Every distinct label is resolved once, so a million per-cell labels cost as much as their
few hundred distinct values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from immunegym.ontology.conventions import get_convention
from immunegym.ontology.nodes import CLOSED_NODES
from immunegym.ontology.synonyms import (
    CLUSTER_ID,
    COMPILED_PHRASES,
    DASH_TRANSLATION,
    GLUED_QUALIFIER,
    LOW_QUALIFIERS,
    MARKERS,
    NAMES,
    NEGATION_PREFIXES,
    NEGATIVE_QUALIFIERS,
    POSITIVE_QUALIFIERS,
    STRONG_JUNK,
    WEAK_JUNK,
)
from immunegym.ontology.tree import CellOntology, default_ontology
from immunegym.validation import ValidationError, bad, boolean

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^a-z0-9]+")

# Confidence of each rule: how directly the label says where it belongs.
RULE_CONFIDENCE: dict[str, float] = {
    "name": 1.0,  # names on one path, nothing else needed
    "name+marker": 0.9,  # names, then marker genes chose a child
    "mixture": 0.8,  # the label names cell types on different branches
    "negation": 0.7,  # what the label excludes decided the node ("non-Treg CD4", "non-immune")
    "marker": 0.6,  # only marker genes, no cell-type name
    "outside": 0.5,  # a real cell type with no node of its own: counted at the root
    "junk": 0.0,  # not a cell to count (doublets, low quality, unknown)
    "unmapped": 0.0,  # nothing in the label was recognised
    "missing": 0.0,  # the label is missing (None / NaN)
}


class UnmappedLabelError(ValidationError):
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


def _is_vocab(token: str) -> bool:
    return _vocabulary_key(token) is not None


def _unglue(match: re.Match[str]) -> str:
    """Split a qualifier glued to a vocabulary word ("pd1hi" -> "pd1 hi")."""
    word, stem, qualifier = match.group(0), match.group(1), match.group(2)
    if len(stem) < 2 or _is_vocab(word):
        return word
    normalized = stem
    for pattern, replacement in COMPILED_PHRASES:
        normalized = pattern.sub(replacement, normalized)
    return f"{stem} {qualifier}" if _is_vocab(normalized.strip()) else word


def _marker_like(token: str, *, names_too: bool = True) -> bool:
    """Gene-like tokens, for which a trailing "-" (or "low", markers only) means absence.

    With ``names_too`` a name written as a gene ("CD4", "CD45") counts; "low" passes
    ``names_too=False``: "CD56dim NK" cells are NK cells.
    """
    key = _vocabulary_key(token)
    if key is None:
        return False
    if key in MARKERS and key not in NAMES:
        return True
    return names_too and any(c.isdigit() for c in key)


_WORD = re.compile(r"[a-z0-9]+")
_JOIN = re.compile(r"[\s-]*")  # separators a qualifier or a "non-" may stand behind
_CD_NEXT = re.compile(r"cd\d")
_DIGIT_QUALIFIER = re.compile(r"(?<=\d)(high|hi|low|lo|dim|bright|pos|neg)\b")


def read_label(label: str) -> tuple[list[str], list[str]]:
    """The canonical tokens of a label, split into what it says and what it negates.

    Step 1 of the module docstring. Negation is read where labs write it: a prefix
    ("non-immune", "not exhausted", "lacking CD8", "nonT"), a qualifier after the word
    ("PD1-negative", "CD8 neg", "TIM3lo", "PD-1 low") and a trailing minus ("CD4-CD8-",
    with "-", the Unicode minus or a dash). "low"/"lo"/"dim" negate marker genes only: a
    "CD56dim NK" cell is still an NK cell. Positive qualifiers ("+", "hi", "pos") are dropped.

    Returns
    -------
    positive, negated
        Tokens the label asserts, and tokens it says the cells are not / do not express.
    """
    text = label.translate(DASH_TRANSLATION)
    # "_" is a separator here, but a word character to regex \b: make it a space first.
    text = _CAMEL.sub(" ", text).replace("_", " ").lower()
    text = _DIGIT_QUALIFIER.sub(r" \1", text)  # "pd-1lo" -> "pd-1 lo" before phrases
    text = GLUED_QUALIFIER.sub(_unglue, text)
    for pattern, replacement in COMPILED_PHRASES:
        text = pattern.sub(replacement, text)
    matches = list(_WORD.finditer(text))
    words = [m.group(0) for m in matches]
    gaps = [text[m.end():(matches[i + 1].start() if i + 1 < len(matches) else len(text))]
            for i, m in enumerate(matches)]
    positive: list[str] = []
    negated: list[str] = []
    i = 0
    while i < len(words):
        word, gap = words[i], gaps[i]
        following = words[i + 1] if i + 1 < len(words) else None
        joined = _JOIN.fullmatch(gap) is not None
        if word in NEGATION_PREFIXES and following and joined and _is_vocab(following):
            negated.append(following)
            i += 2
            continue
        if (word.startswith("non") and not _is_vocab(word) and len(word) > 3
                and _is_vocab(word[3:])):
            negated.append(word[3:])
            i += 1
            continue
        if _is_vocab(word) and following and joined:
            if following in NEGATIVE_QUALIFIERS:
                negated.append(word)
                i += 2
                continue
            if following in LOW_QUALIFIERS:
                (negated if _marker_like(word, names_too=False) else positive).append(word)
                i += 2
                continue
            if following in POSITIVE_QUALIFIERS:
                positive.append(word)
                i += 2
                continue
        # A trailing minus: "-" followed by a non-word character, the end, or the next
        # marker ("CD4-CD8-"); "CD8-T cells" keeps its CD8.
        if gap.startswith("-") and _marker_like(word) and (
            gap != "-" or following is None or _CD_NEXT.match(following)
        ):
            negated.append(word)
        else:
            positive.append(word)
        i += 1
    return positive, negated


def tokenize(label: str) -> list[str]:
    """The canonical tokens a label asserts (negated ones left out; see :func:`read_label`)."""
    return read_label(label)[0]


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
        if ontology is not None and not isinstance(ontology, CellOntology):
            raise bad("ontology", ontology, "a CellOntology or None (the package default)")
        self.ontology = ontology or default_ontology()
        table: dict[str, str] = {}
        if convention is not None:
            table.update({k.lower(): v for k, v in get_convention(convention).items()})
        if aliases is not None:
            if not isinstance(aliases, Mapping):
                raise bad("aliases", aliases, "a mapping from label to text (str -> str)")
            for key, value in aliases.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise bad(f"aliases[{key!r}]", value,
                              "str keys and str values (label -> text to read)")
            table.update({k.lower(): v for k, v in aliases.items()})
        self.convention = convention
        self._n_aliases = 0 if aliases is None else len(aliases)
        self._aliases = table
        self._cache: dict[str, LabelMatch] = {}
        unknown = {n for cands in NAMES.values() for n in cands} | {
            n for entries in MARKERS.values() for n, _ in entries
        }
        unknown -= set(self.ontology.ids)
        if unknown:
            raise ValidationError(
                f"the synonym tables name nodes {sorted(unknown)} that the ontology lacks"
            )

    # ------------------------------------------------------------------ one label
    def __repr__(self) -> str:
        return (f"Harmonizer(convention={self.convention!r}, aliases={self._n_aliases}, "
                f"cached_labels={len(self._cache)}, ontology_nodes={len(self.ontology)})")

    def match(self, label: str | bytes) -> LabelMatch:
        """Map one label (cached); bytes are decoded as UTF-8."""
        text = _as_text("label", label)
        if text is None:
            return LabelMatch(str(label), None, "missing", RULE_CONFIDENCE["missing"])
        cached = self._cache.get(text)
        if cached is None:
            cached = self._match_uncached(text)
            self._cache[text] = cached
        return cached

    def _match_uncached(self, label: str) -> LabelMatch:
        if not label.strip():
            return LabelMatch(label, None, "missing", RULE_CONFIDENCE["missing"])
        translated = self._aliases.get(label.strip().lower())
        said, negated = read_label(translated if translated is not None else label)
        ev = _collect(said)
        neg = _collect(negated)

        def result(node: str | None, rule: str, evidence: Sequence[str] = ()) -> LabelMatch:
            return LabelMatch(label, node, rule, RULE_CONFIDENCE[rule], tuple(evidence),
                              translated)

        if ev.strong_junk:
            return result(None, "junk")
        onto = self.ontology
        candidate_sets = [cands for _, cands in ev.names]
        evidence = [f"{tok}->{'|'.join(cands)}" for tok, cands in ev.names]
        evidence += [f"!{tok}" for tok, _ in neg.names]
        evidence += [f"!{tok}" for tok, _ in neg.markers]
        negation_only = False
        marker_only = not candidate_sets
        if marker_only:
            if ev.markers:
                candidate_sets = [tuple(n for n, _ in entries) for _, entries in ev.markers]
            elif neg.names or neg.markers:
                negation_only = True  # "non-immune": only what the cells are not
            else:
                return result(None, "junk" if ev.weak_junk else "unmapped")
        if negation_only:
            node, mixture = onto.root, False
        else:
            node, mixture = self._resolve(candidate_sets)
        excluded = self._excluded(node, neg)
        if any(a in excluded for a in onto.ancestors(node, include_self=True)):
            # "CD3- CD8+": the label asserts a type and denies its lineage; no node is honest.
            return result(None, "unmapped", evidence)
        node, refined_by, by_negation = self._refine(node, ev.markers, excluded, neg.markers)
        evidence += [f"{tok}~{child}" for tok, child in refined_by]
        if negation_only or by_negation:
            rule = "negation"
        elif node == onto.root:
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

    def _excluded(self, node: str, neg: _Evidence) -> set[str]:
        """The nodes a label's negated *names* rule out, read relative to ``node``.

        Negated markers are not here: like positive markers they only act among the
        children of the node reached (see :meth:`_refine`).
        """
        onto = self.ontology
        out: set[str] = set()
        for _, cands in neg.names:
            # A vague negated name ("non-naive") means the reading below what was said.
            below = [c for c in cands if onto.is_ancestor(node, c)]
            out.update(below or cands)
        return out

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
        self,
        node: str,
        markers: Sequence[tuple[str, tuple[tuple[str, int], ...]]],
        excluded: Iterable[str] = (),
        negative_markers: Sequence[tuple[str, tuple[tuple[str, int], ...]]] = (),
    ) -> tuple[str, list[tuple[str, str]], bool]:
        """Walk down from ``node``: markers vote among the children the label does not rule
        out (by a negated name anywhere, or a negated marker of that child); when the label
        rules out all children but one of a node whose children partition it
        (:data:`~immunegym.ontology.nodes.CLOSED_NODES`), that one is what it says.

        Returns the node, the (marker, child) votes used and whether a negation moved it.
        """
        onto = self.ontology
        used: list[tuple[str, str]] = []
        by_negation = False

        excluded = set(excluded)
        denied = {child for _, entries in negative_markers for child, _ in entries}

        def ruled_out(child: str) -> bool:
            if child in denied:
                return True
            return all(
                any(a in excluded for a in onto.ancestors(leaf, include_self=True))
                for leaf in onto.leaves_under(child)
            )

        while not onto.is_leaf(node):
            children = onto.children(node)
            allowed = [c for c in children if not ruled_out(c)]
            scores: dict[str, int] = {}
            voters: dict[str, list[str]] = {}
            for token, entries in markers:
                for child, strength in entries:
                    if child in allowed and onto.parent(child) == node:
                        scores[child] = scores.get(child, 0) + strength
                        voters.setdefault(child, []).append(token)
            if scores:
                ranked = sorted(scores.values(), reverse=True)
                if len(ranked) > 1 and ranked[0] == ranked[1]:
                    break  # markers disagree: stay at the parent
                node = max(scores, key=scores.__getitem__)
                used += [(token, node) for token in voters[node]]
            elif len(allowed) == 1 and len(children) > 1 and node in CLOSED_NODES:
                # The children partition their parent: all but one ruled out leaves that one
                # ("non-Treg CD4" -> CD4 helper, "TIM-3-negative exhausted CD8" -> Tpex).
                node = allowed[0]
                by_negation = True
            else:
                break
        return node, used, by_negation

    # ------------------------------------------------------------------ many labels
    def harmonize(self, labels: Sequence[object], strict: bool = False) -> HarmonizationReport:
        """Map a sequence of labels (per cell, with repeats); see :func:`harmonize_labels`."""
        strict = boolean("strict", strict)
        codes, uniques = _factorize_labels(labels)
        texts = [_as_text(f"labels[{_first_index(codes, k)}]", u) for k, u in enumerate(uniques)]
        # Distinct inputs may read the same ("CD8" and b"CD8"): one match each, merged.
        table: dict[str, int] = {}
        remap = np.empty(len(texts) + 1, dtype=np.int64)
        matches: list[LabelMatch] = []
        for k, text in enumerate(texts):
            if text is None:  # pd.NA and the like that factorize kept
                remap[k] = -1
                continue
            if text not in table:
                table[text] = len(matches)
                matches.append(self.match(text))
            remap[k] = table[text]
        remap[-1] = -1
        codes = remap[codes]
        counts = np.bincount(codes[codes >= 0], minlength=len(matches))
        n_missing = int((codes < 0).sum())
        report = HarmonizationReport(matches, counts, codes, n_missing, self.ontology)
        if strict and report.unmapped:
            raise UnmappedLabelError(
                f"labels: {len(report.unmapped)} label(s) match no ontology node in strict "
                f"mode: {report.unmapped[:20]}; expected cell-type names or codes of a known "
                "convention (pass convention= or aliases=, or strict=False to map them to None)"
            )
        return report


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _as_text(field: str, value: object) -> str | None:
    """A label as text: ``str`` as is, ``bytes`` decoded as UTF-8, ``None``/NaN as missing."""
    if isinstance(value, str):
        return str(value)  # numpy.str_ -> str
    if isinstance(value, bytes | np.bytes_ | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise bad(field, bytes(value), f"UTF-8 text (byte {err.start} cannot be decoded; "
                      "decode the labels yourself with the right encoding)") from None
    if _is_missing(value):
        return None
    raise bad(field, value, f"a str (or UTF-8 bytes) label, or None/NaN for missing, not "
              f"{type(value).__name__} (convert codes with astype(str) and name them with "
              "aliases=)")


def _first_index(codes: np.ndarray, k: int) -> int:
    return int(np.flatnonzero(codes == k)[0])


def _factorize_labels(labels: object) -> tuple[np.ndarray, list[object]]:
    """Codes per input (``-1`` missing) and the distinct values, after checking the container."""
    if isinstance(labels, str | bytes):
        raise bad("labels", labels, "a sequence of labels, not a single label (wrap it in a "
                  "list: [label])")
    if isinstance(labels, Mapping) or not isinstance(labels, Iterable):
        raise bad("labels", labels, "a sequence of labels (list, array, Series)")
    if not isinstance(labels, Sequence | np.ndarray | pd.Series | pd.Index | pd.Categorical):
        labels = list(labels)  # a generator or set: read it once
    values = labels.to_numpy() if isinstance(labels, pd.Series | pd.Index) else labels
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise bad("labels", f"<array of shape {values.shape}>", "a 1-D sequence of labels")
    try:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    except TypeError:
        # Unhashable entries (dicts, lists): name the first one.
        for i, value in enumerate(values):
            _as_text(f"labels[{i}]", value)
        raise  # pragma: no cover - factorize failed on something _as_text accepts
    return np.asarray(codes, dtype=np.int64), list(uniques)


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

    def __repr__(self) -> str:
        n_inputs = int(self.counts.sum()) + self.n_missing
        return (
            f"HarmonizationReport({n_inputs} labels, {len(self.matches)} distinct, "
            f"mapped {self.mapped_fraction:.1%}; unmapped={len(self.unmapped)}, "
            f"junk={len(self.junk)}, missing={self.n_missing})"
        )

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
    labels: Sequence[object],
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
        A sequence (list, array, Series, Categorical) of labels in any lab's convention;
        repeats are cheap (each distinct label is read once). ``bytes`` (as h5py returns
        them) are decoded as UTF-8; ``None``/NaN give ``None``. Negation is read ("non-immune",
        "PD1-negative", "CD4-CD8-", "TIM3lo"; see :func:`read_label`).
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

    Raises
    ------
    ValidationError
        A label that is not text (naming its index and type), bytes that are not UTF-8, a
        single string instead of a sequence, an unknown ``convention`` (listing the known
        ones), ``aliases`` that are not str -> str, or a non-bool ``strict``.
    UnmappedLabelError
        In strict mode, listing the unrecognised labels.

    Examples
    --------
    >>> harmonize_labels(["CD8.c12.Tex.CXCL13", "Macro_SPP1", "T/NK cells", "Doublets"])
    ['cd8_tex', 'macrophage_m2', 'lymphoid', None]
    """
    return harmonization_report(
        labels, convention=convention, aliases=aliases, strict=strict, ontology=ontology
    ).nodes
