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
        "A latent state-space model: the state is the log abundance of 20 fine cell types; "
        "a GRU filter reads biopsies (through each lab's labeling bias), scans and doses; "
        "per-drug additive dynamics with a penalized pair interaction carry the state "
        "forward; a biopsy is a Dirichlet-multinomial draw around the state, a scan a "
        "Gaussian around its sum of diameters. Members are trained on bootstrap resamples; "
        "rollouts sample the state, with per-horizon conformal scales.",
        "",
        "## Model",
        _table({
            "members": model.config.n_members,
            "parameters per member": f"{model.num_parameters():,}",
            "filter GRU width / context / dynamics width": f"{c.d_hidden} / {c.d_context} / "
                                                           f"{c.d_dynamics}",
            "cancer type as input": bool(model.config.cancer_types),
            "labs with a learned labeling bias": ", ".join(model.config.labs) or "none",
            "lab biases anchored (read as deviations from their mean)": c.anchor_lab_bias,
            "privileged training (hidden state supervises the latent)":
                model.config.privileged,
            "conformal scale by horizon": ", ".join(
                f"{s:.2f}" for s in model.config.conformal_scale) or "none",
        }),
        "",
        "## Training data",
        "Synthetic cohorts from ImmuneSim (the calibrated mechanistic simulator). Inputs are "
        "only what a lab observes (biopsies labeled in each lab's convention, imaging, "
        "therapies). With privileged training the simulator's hidden daily state (true "
        "log cell counts and sum of diameters) supervises the latent state and the model's "
        "own 8-cycle rollouts; the observation likelihood stays in the loss, so the model "
        "can be fine-tuned on a user's cohort from observations alone. A "
        "`randomized_fraction` share of each design's synthetic patients (the `_rand` "
        "cohorts) is randomized over untreated, every therapy alone and every pair, so each "
        "drug's effect is seen in every cancer type and lab and not only where the suite's "
        "observational designs give it.",
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
        "- Trained on simulated cohorts of the default suite's designs (9 cancer types, 5 "
        "therapies); dynamics outside them (other drugs, schedules far from the standard "
        "ones, more than two drugs at once, horizons beyond the one-year follow-up) are "
        "extrapolation.",
        "- Which regimen is best for one patient hinges on hidden patient parameters (the "
        "tumor's escape route, drug sensitivities) that a baseline biopsy barely shows; the "
        "model knows each drug's average effect and part of who benefits, not the rest "
        "(BENCHMARKS.md, counterfactual fidelity).",
        "- Privileged training: the latent state is ImmuneSim's log cell counts by "
        "construction. On real data only the observation likelihood can be used "
        "(`WorldModel.fit(adata)`, `privileged = false`); how well the simulator-shaped "
        "latent transfers to real tumors is not established.",
        "- Composition over the 20 fine types only; labs that label coarser contribute block "
        "totals, not the split inside a block. A lab not seen in training must be read as "
        "\"unknown\" (no labeling bias) or fitted.",
        "- Program scores (per-cell expression programs) are not inputs: the counts-only "
        "training cohorts have none.",
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
