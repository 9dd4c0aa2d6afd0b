"""The comparison table of a run and its one-line summaries, made from ``summary.json``'s entries (plain dicts)."""
from __future__ import annotations

import math

import numpy as np

from slr.io import underflowed_log10


def attention_line(excess: dict, L: int) -> str:
    """The mean attention weight on the informative token of every predictor that has one (docs/transformer.md)."""
    parts = []
    for e in excess.values():
        if "attention_on_J0" in e:
            per = e.get("attention_on_J0_per_repeat")
            spread = f" (median of {len(per)} repeats, {min(per):.3g} to {max(per):.3g})" if per is not None and len(per) > 1 else ""
            parts.append(f"{e['name']} {e['attention_on_J0']:.3g}{spread}")
    return f"attention on the informative token J0 (uniform: 1/L = {1 / L:.3g}): " + "; ".join(parts)


def _bayes_cells(e: dict) -> tuple[str, str]:
    """The Bayes row's one number and where it comes from: the importance-sampling estimate with its standard error
    when it ran (quoted by its log10 and relative error where it is below the float range), else Monte Carlo."""
    tiny = underflowed_log10(e)
    if tiny is not None:
        return f"10^{tiny:.1f} ± {100 * e.get('importance_sampling_rel_se', math.nan):.2g}%", "importance sampling"
    if e.get("importance_sampling") is not None:
        return f"{e['importance_sampling']:.4g} ± {e.get('importance_sampling_se', math.nan):<7.2g}", "importance sampling"
    if e.get("mc") is None or e["mc"] != e["mc"]:  # a user's task without bayes_predict
        return "not given", "Monte Carlo"
    return f"{e['mc']:.4g} ± {e['se']:<7.2g}", "Monte Carlo"


def comparison_table(excess: dict) -> str:
    """The comparison printed at the end of a run: one row per predictor, Bayes first with one number."""
    lines = [f"{'predictor':<46}{'excess risk':>22}{'closed form':>14}{'excess over Bayes':>24}"]
    notes: set = set()
    for key, e in excess.items():
        name = e["name"] + (f", lam={e['lam']:.3g}" if "lam" in e else "")
        if "per_repeat" in e:
            name += f" [{len(e['per_repeat'])} repeats]"
        if key == "bayes":
            value, source = _bayes_cells(e)
            lines.append(f"{name + ' (' + source + ')':<46}{value:>22}")
            continue
        cf = e.get("closed_form")
        cf_s = "" if cf is None else f"{cf:.4g}"
        if e.get("closed_form_note"):  # e.g. not available for student_t tokens
            cf_s = "n/a"
            notes.add(e["closed_form_note"])
        ob = "" if e.get("over_bayes") is None or e["over_bayes"] != e["over_bayes"] else \
            f"{e['over_bayes']:.4g} ± {e['over_bayes_se']:.2g}"
        lines.append(f"{name:<46}{e['mc']:>12.4g} ± {e['se']:<7.2g}{cf_s:>14}{ob:>24}")
    lines.append("(± one standard error. Excess risk: Monte Carlo on shared test samples, Bayes by importance sampling "
                 "where it ran; trained: mean over repeats, its error combining the spread of the repeats and the Monte "
                 "Carlo error; closed form: median over repeats; excess over Bayes: paired Monte Carlo)")
    for note in sorted(notes):
        lines.append(f"(n/a: closed forms and the reduced simulator are {note})")
    if "importance_sampling_note" in excess.get("bayes", {}):
        lines.append(f"(Bayes by importance sampling: {excess['bayes']['importance_sampling_note']}; Monte Carlo instead)")
    return "\n".join(lines)


def alignment_line(summary: dict, threshold: float = 0.9) -> str | None:
    """What training reached, in one line: median ``|kappa|``, ``|nu|``, how many repeats aligned (both >= 0.9),
    how many ended with ``k`` on ``±v*`` instead, and the ``lam`` path; None without overlaps."""
    per = (summary.get("final_overlaps") or {}).get("per_repeat") or {}
    if not per or not len(per.get("kappa", [])):
        return None
    k, n, e = (np.abs(np.asarray(per[x], dtype=float)) for x in ("kappa", "nu", "eta"))
    if not np.isfinite(k).any():  # a module without key and value directions
        return None
    t = summary.get("trained") or {}
    line = (f"trained: median |kappa| {np.median(k):.3f}, |nu| {np.median(n):.3f} after {t.get('steps_done')} steps; "
            f"{int(((k >= threshold) & (n >= threshold)).sum())} of {k.size} repeats aligned (|kappa|, |nu| >= {threshold:g})")
    swapped = int((e >= threshold).sum())
    if swapped:
        line += f", {swapped} with k on ±v*"
    if t.get("lam_initial") is not None and t.get("lam_final") != t.get("lam_initial"):
        line += "; " + _lam_text(t["lam_initial"], t["lam_final"])
    return line


def _lam_text(lam0: float, lam: float) -> str:
    return f"lam {lam0:.3g}" if lam == lam0 else f"lam {lam0:.3g} -> {lam:.3g}"



TEXT_SPLITS = ("train", "test", "ood_tokens", "ood_structure", "ood_both")


def text_table(summary: dict) -> str:
    """The table of a ``task=text`` run (docs/text.md): accuracy and squared loss per split of the trained attention
    (mean over repeats) and of the first-token least-squares baseline, and the attention on the label adjective."""
    splits = [s for s in TEXT_SPLITS if s in summary["accuracy"]]
    head = f"{'predictor':<34}{'':>9}" + "".join(f"{s:>15}" for s in splits)
    rows = [head, "-" * len(head)]
    name = f"{summary['trained']['predictor']} (trained)"
    lin = summary["baselines"]["linear_first_token"]
    for label, values in ((name, summary["accuracy"]), ("", summary["loss"]),
                          ("linear on the first token", lin["accuracy"]), ("", lin["loss"])):
        what = "accuracy" if values in (summary["accuracy"], lin["accuracy"]) else "sq. loss"
        rows.append(f"{label:<34}{what:>9}" + "".join(f"{values[s]:>15.4g}" for s in splits))
    def cells(values: dict) -> str:
        return "".join(f"{'n/a' if values.get(s) is None else format(values[s], '.3g'):>15}" for s in splits)

    rows.append(f"{'attention on the label adjective':<34}{'trained':>9}" + cells(summary["attention_on_J0"]))
    rows.append(f"{'':<34}{'uniform':>9}" + cells(summary["baselines"]["uniform_on_J0"]))
    rows.append(f"{'attention on the first token':<34}{'trained':>9}" + cells(summary.get("attention_on_first", {})))
    rows.append(f"{'attention on the last token':<34}{'trained':>9}" + cells(summary.get("attention_on_last", {})))
    rows.append("No Bayes row: the law of the sentences' token states is unknown (accuracy: sign of the prediction "
                "against the label +-1).")
    return "\n".join(rows)
