"""Summarise the SAC Pendulum finetuning runs (docs/rl.md, "Actor-critic training"): steps to a mean
return of -200 per (method, seed) from each run's ``evaluations.json`` (periodic evaluations only, the
final evaluation of ``model.zip`` left out), written as ``finetune_sac_pendulum.csv`` (per run) and
``finetune_sac_pendulum_summary.csv`` (medians; a run that never reaches -200 counts as larger than the
budget).

Usage: python summarize_finetune.py RUNS_ROOT OUT_DIR [NAME]  (RUNS_ROOT/{method}/{run}/evaluations.json;
NAME replaces ``finetune_sac_pendulum`` in the file names)
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from equirl.rl.spec import env_scores

THRESHOLD = env_scores("Pendulum-v1")["threshold"]  # the spec's: -200


def main(root: Path, out: Path, name: str = "finetune_sac_pendulum") -> None:
    rows = []
    for ev in sorted(root.glob("*/*/evaluations.json")):
        data = json.loads(ev.read_text(encoding="utf-8"))
        cfg = (ev.parent / "config.yaml").read_text(encoding="utf-8")
        budget = next(int(line.split(":")[1]) for line in cfg.splitlines() if line.startswith("timesteps:"))
        periodic = data["evaluations"][:-1]
        hit = next((e["timestep"] for e in periodic if e["mean_return"] >= THRESHOLD), None)
        rows.append(
            {
                "method": data["method"],
                "seed": data["seed"],
                "budget": budget,
                "steps_to_threshold": hit if hit is not None else f">{budget}",
                "best_mean": max(e["mean_return"] for e in periodic),
                "final_mean": data["evaluations"][-1]["mean_return"],
                "curve": " ".join(f"{e['timestep']}:{e['mean_return']:.0f}" for e in periodic),
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = []
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        budget = mine[0]["budget"]
        # censored runs count as larger than the budget
        steps = sorted(
            r["steps_to_threshold"] if isinstance(r["steps_to_threshold"], int) else budget + 1 for r in mine
        )
        med = statistics.median_low(steps)
        summary.append(
            {
                "method": method,
                "seeds": len(mine),
                "reached": sum(isinstance(r["steps_to_threshold"], int) for r in mine),
                "median_steps_to_threshold": med if med <= budget else f">{budget}",
                "median_final_return": round(statistics.median(r["final_mean"] for r in mine), 1),
                "median_best_return": round(statistics.median(r["best_mean"] for r in mine), 1),
            }
        )
    with open(out / f"{name}_summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    for s in summary:
        print(s)
    for r in rows:
        print(r["method"], r["seed"], r["steps_to_threshold"], r["curve"], round(r["final_mean"], 1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
