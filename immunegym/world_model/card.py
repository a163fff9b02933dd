"""The model card written beside every checkpoint (Mitchell et al. 2019, short form)."""

from __future__ import annotations

import json


def _table(rows: dict[str, object]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def render_card(model, card: dict[str, object]) -> str:
    """Markdown model card from the model and the training record ``card``."""
    c = model.config.module
    data = card.get("data", {})
    evaluation = card.get("evaluation")
    parts = [
        "# immunegym world model",
        "",
        "A trajectory-aware Transformer over observed tumor timelines (biopsy compositions "
        "over 20 fine cell types, program scores, imaging burden, therapy per 21-day cycle). "
        "It predicts the next time point's composition (Dirichlet) and log sum of diameters "
        "(Gaussian); a deep ensemble gives the epistemic part.",
        "",
        "## Model",
        _table({
            "members": model.config.n_members,
            "parameters per member": f"{model.num_parameters():,}",
            "d_model / heads / layers / d_ff": f"{c.d_model} / {c.n_heads} / {c.n_layers} / "
                                               f"{c.d_ff}",
            "cancer type as input": bool(model.config.cancer_types),
            "programs": ", ".join(model.config.programs) or "none",
        }),
        "",
        "## Training data",
        "Synthetic cohorts from ImmuneSim (the calibrated mechanistic simulator): only what "
        "a lab observes (biopsies labeled in each lab's convention, imaging, therapies), "
        "never the simulator's hidden state.",
        "",
        "```json",
        json.dumps(data, indent=2),
        "```",
        "",
        "Command: `" + str(card.get("command", "immunegym train --config FILE --out DIR")) + "`",
        "",
        "## Intended use",
        "- A batched simulator for therapy-planning research (the ImmuneWorld-v0 environment), "
        "counterfactual what-if questions on virtual patients, and benchmarks against the "
        "ImmuneSim ground truth.",
        "- Research only. Not validated on real patients; not for clinical decisions.",
        "",
        "## Limits",
        "- Trained on simulated cohorts of the default suite (8 cancer types, 5 therapies); "
        "dynamics outside them (other drugs, schedules far from the standard ones, horizons "
        "beyond the one-year follow-up) are extrapolation.",
        "- Composition over the 20 fine types only; labs that label coarser contribute block "
        "totals, not the split inside a block.",
        "- Death is not modeled; the burden forecast is the only survival signal.",
        "- Predictive intervals are calibrated on the simulator's cohorts; on real data their "
        "coverage is unknown.",
        "",
        "## Evaluation",
    ]
    if evaluation:
        parts += ["```json", json.dumps(evaluation, indent=2), "```"]
    else:
        parts.append("Not evaluated yet: run `immunegym bench world-model --json PATH`.")
    return "\n".join(parts) + "\n"
