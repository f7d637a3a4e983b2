"""The ablation's numbers: the per-arm table (mean ± sd over clips), paired differences between arms on the same
prompts and seeds, and the paper's three directions, each stated as holding, not holding or not measurable."""

from __future__ import annotations

import math
import statistics

# (column, clip key): Face Sim x100 and CLIP-T as Evaluate Video reports them
COLUMNS = (("Face Sim ArcFace (×100)", "face_sim"), ("Face Sim dlib (×100)", "face_sim_dlib"),
           ("CLIP-T", "clip_t"), ("dynamic degree", "dynamic"), ("mean flow (px)", "flow"),
           ("follows prompt", "follows_prompt"), ("no-face rate", "no_face_rate"))
SECOND_PACK = ("Face Sim 2nd ArcFace (×100)", "face_sim_2")


def _values(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_sd(values) -> tuple[float, float, int] | None:
    values = _values(values)
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _stat(values) -> str:
    got = mean_sd(values)
    return "n/a" if got is None else f"{got[0]:.2f} ± {got[1]:.2f}"


def table(results: list[dict]) -> str:
    """Markdown: a header, a separator and one row per arm."""
    columns = list(COLUMNS)
    if any(c.get("face_sim_2") is not None for r in results for c in r["clips"]):
        columns.insert(2, SECOND_PACK)
    rows = ["| arm | " + " | ".join(name for name, _ in columns) + " | clips |",
            "|---" * (len(columns) + 2) + "|"]
    for r in results:
        cells = [_stat(c.get(key) for c in r["clips"]) for _, key in columns]
        rows.append(f"| {r['arm']} | " + " | ".join(cells) + f" | {len(r['clips'])} |")
    return "\n".join(rows)


def paired(results: list[dict], arm: str, other: str, key: str) -> list[float]:
    """``arm`` minus ``other`` on each (prompt, seed) both have a value for."""
    by_arm = {r["arm"]: {(c["prompt"], c["seed"]): c.get(key) for c in r["clips"]} for r in results}
    if arm not in by_arm or other not in by_arm:
        return []
    out = []
    for clip, value in by_arm[arm].items():
        base = by_arm[other].get(clip)
        if value is not None and base is not None:
            out.append(float(value) - float(base))
    return out


def difference(results, arm, other, key) -> str:
    got = mean_sd(paired(results, arm, other, key))
    return "n/a" if got is None else f"{got[0]:+.3f} ± {got[1]:.3f} (n {got[2]})"


# two-sided 95 % critical values of Student's t for 1..30 degrees of freedom (then 1.96)
T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.10,
       2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04)


def verdict(diffs: list[float], wanted_sign: int) -> str:
    """'holds' / 'does not hold: the opposite' when the paired t test (two-sided, 95 %) finds a difference in the
    claimed / the other direction, else 'does not hold: no clear difference'; fewer than 2 pairs: not measurable."""
    if len(diffs) < 2:
        return "not measurable (fewer than 2 paired clips)"
    m, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0.0:
        t = 0.0 if m == 0.0 else math.copysign(math.inf, m)
    else:
        t = m / (sd / math.sqrt(len(diffs)))
    critical = T95[len(diffs) - 2] if len(diffs) - 1 <= len(T95) else 1.96
    if t * wanted_sign >= critical:
        return f"holds (t {t:+.1f}, 95 % needs {critical})"
    if t * wanted_sign <= -critical:
        return f"does not hold: the opposite (t {t:+.1f}, 95 % needs {critical})"
    return f"does not hold: no clear difference (t {t:+.1f}, 95 % needs {critical})"


def _faces(results, arm) -> bool:
    r = next((r for r in results if r["arm"] == arm), None)
    return r is not None and any(c.get("no_face_rate") is not None and c["no_face_rate"] < 1.0 for c in r["clips"])


# (direction, arm, other, [(key, wanted sign, needs faces)]): what the paper claims, as paired differences
DIRECTIONS = (
    ("identity gain over the base model", "gate 0.75", "base",
     [("face_sim_dlib", +1, True), ("face_sim", +1, True)]),
    ("the gate keeps motion that all-step injection loses", "gate 0.75", "all steps",
     [("follows_prompt", +1, True), ("flow", +1, False), ("dynamic", +1, False)]),
    ("SCR keeps motion and semantics", "gate 0.75", "gate 0.75, no SCR",
     [("clip_t", +1, False), ("follows_prompt", +1, True), ("flow", +1, False)]),
)


def directions(results: list[dict]) -> str:
    """One block per direction: the paired differences that bear on it and a verdict per metric. The first
    metric listed is the deciding one (the independent recogniser for identity; prompt-motion adherence for
    motion; CLIP-T for semantics); a metric that needs faces is not measurable when either arm drew none."""
    lines = []
    arms = {r["arm"] for r in results}
    for name, arm, other, metrics in DIRECTIONS:
        lines.append(f"- **{name}** ({arm} − {other}):")
        if not {arm, other} <= arms:
            lines.append(f"  - not measurable: arm(s) {sorted({arm, other} - arms)} not run")
            continue
        for key, sign, needs_faces in metrics:
            diffs = paired(results, arm, other, key)
            if needs_faces and not (_faces(results, arm) and _faces(results, other)):
                state = "not measurable: no face in any clip of one of the arms"
            elif not diffs:
                state = "not measurable: no values (evaluator not connected, or no prompt names a motion)"
            else:
                state = verdict(diffs, sign)
            lines.append(f"  - {key}: {difference(results, arm, other, key)} -> {state}")
    return "\n".join(lines)


def training_table(results: list[dict]) -> str:
    """Per trained arm: steps, updates, ArcFace similarity first -> last fifth and the base on the same draws."""
    rows = ["| arm | steps (updated) | ArcFace sim, first fifth -> last fifth | base on the same draws | "
            "no-face rate (last fifth) | train s |", "|---|---|---|---|---|---|"]
    for r in results:
        curve = r.get("curve") or []
        if not curve:
            continue
        fifth = max(1, len(curve) // 5)
        first, last = curve[:fifth], curve[-fifth:]
        stat = lambda rows, k: _stat(x.get(k) for x in rows)  # noqa: E731
        updated = sum(1 for x in curve if not x.get("skipped"))
        rows.append(f"| {r['arm']} | {len(curve)} ({updated}) | {stat(first, 'similarity')} -> "
                    f"{stat(last, 'similarity')} | {stat(last, 'source_similarity')} | "
                    f"{stat(last, 'no_face_rate')} | {r.get('train_seconds', 'n/a')} |")
    return "\n".join(rows)
