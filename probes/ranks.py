"""Cross-rank verdicts under tensor parallelism, one place for the engine checks
(driftcheck/engine_checks.py `judge_ranks`) and the stress (probes/stress_cli.py `rank_problems`).

Each entry describes one worker process that ran the model: {"rank", "world_size", "digests"}, the
digests being ESamp's (intervention, train steps, distiller state sum, fused logits sum) rows
(esamp/controller.py `_record_digest`)."""

from __future__ import annotations


def compare_ranks(ranks: list[dict], tp: int, esamp: bool) -> list[str]:
    """Every rank 0..tp-1 ran prepared steps (a silent rank is named), each saw world size tp, and with
    ESamp every rank's digests equal the lowest rank's (the first difference is shown)."""
    ranks = sorted(ranks, key=lambda r: r["rank"])
    seen = [r["rank"] for r in ranks]
    problems = []
    if seen != list(range(tp)):
        problems.append(f"rank(s) {sorted(set(range(tp)) - set(seen))} of {tp} never ran a prepared step (hooks "
                        f"silent there: surface runner.prepare_inputs); ranks seen {seen}")
    problems += [f"rank {r['rank']}: world size {r['world_size']}, not {tp}" for r in ranks if r["world_size"] != tp]
    if esamp and len(ranks) > 1:
        base = ranks[0]
        if not base["digests"]:
            problems.append("no cross-rank ESamp digest was recorded (ESamp under TP records one every few "
                            "interventions)")
        for r in ranks[1:]:
            if r["digests"] != base["digests"]:
                first = next((i for i, (a, b) in enumerate(zip(base["digests"], r["digests"])) if a != b),
                             min(len(base["digests"]), len(r["digests"])))
                problems.append(f"rank {r['rank']}'s ESamp state diverged from rank {base['rank']}'s at digest "
                                f"{first}: {r['digests'][first:first + 1]} vs {base['digests'][first:first + 1]}")
    return problems
