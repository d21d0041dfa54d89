"""Markdown tables for docs/scale.md from the JSON the simulator wrote.

``python bench/sim/tables.py bench/results/sim_*.json``: the validation table, METG against
ranks (merging the sweeps of several files: their points are pooled per configuration before
the crossing is found) and the hot-spot figures of every simulated point at L = 100 µs.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sim.metg import metg  # noqa: E402


def load(paths: list) -> tuple:
    scale: dict = {}
    central: dict = {}
    validate: list = []
    pooled: list = []
    points: list = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        d = json.loads(text[text.index("{"):])
        for row in d.get("scale", ()):
            key = (row["kind"], row["costs"], row["variant"], row["nranks"])
            scale.setdefault(key, {}).update({p["length"]: p for p in row["points"]})
        for row in d.get("central", ()):
            key = (row["central"], row["nranks"])
            central.setdefault(key, {}).update({p["length"]: p for p in row["points"]})
        found = d.get("validate", ())
        if isinstance(found, dict):         # the validation on a pool of cores
            pooled += found["rows"]
        else:
            validate += found
        if "point" in d:
            points.append((path, d["args"], d["point"]))
    return scale, central, validate, pooled, points


def us(x) -> str:
    return "n/a (> grid)" if x is None else f"{x * 1e6:,.1f} µs"


def metg_table(scale: dict, central: dict) -> list:
    out = ["| workload | costs | engine | P | METG(50 %) | efficiency at 100 µs |",
           "|---|---|---|---|---|---|"]
    for key in sorted(scale):
        pts = [scale[key][L] for L in sorted(scale[key])]
        m = metg(pts)
        lowest = pts[0]["length"]
        text = f"≤ {us(m)}" if m is not None and m == lowest else us(m)
        e100 = scale[key].get(100e-6)
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:,} | {text} | "
                   f"{'' if e100 is None else format(e100['efficiency'], '.3f')} |")
    for key in sorted(central, key=lambda k: (k[1], k[0])):
        pts = [central[key][L] for L in sorted(central[key])]
        out.append(f"| independent | central master ({key[0]}) | - | {key[1]:,} | {us(metg(pts))} | |")
    return out


def hot_table(scale: dict, points: list, length: float = 100e-6) -> list:
    out = ["| costs | engine | P | makespan | rank 0 leaves | FINISHED ops (max wait) | DONE CAS | "
           "rank 0 ops/s | steal probes after last claim (max per target) |",
           "|---|---|---|---|---|---|---|---|---|"]
    rows = [(k[1], k[2], k[3], v[length]) for k, v in sorted(scale.items())
            if k[0] == "independent" and length in v]
    rows += [(a["costs"].split(",")[0], a["variants"].split(",")[0], p["nranks"],
              {"makespan": p["makespan"], "rank0_end": p["rank0_end"], "hot": p["hot"]})
             for _, a, p in points]
    for costs, variant, nranks, p in rows:
        h = p["hot"]
        out.append(f"| {costs} | {variant} | {nranks:,} | {p['makespan'] * 1e3:.2f} ms | "
                   f"{p['rank0_end'] * 1e3:.2f} ms | {h['finished_ops']:,} "
                   f"({h['max_wait_rank0_us']:,.0f} µs) | {h['done_cas']:,} | "
                   f"{h['ops_rank0_per_second']:,.0f} | {h['tail_probes']:,} "
                   f"({h['tail_probes_per_target_max']}) |")
    return out


def validate_table(rows: list) -> list:
    out = ["| workload | P | real makespan | simulated | ratio | CPU x | wake µs | ratio, own wake | "
           "ratio, no load | real wall / sim |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['nranks']} | {r['real']['tasks_span'] * 1e3:.1f} ms | "
                   f"{r['sim']['tasks_span'] * 1e3:.1f} ms | **{r['ratio_span']:.3f}** | "
                   f"{r['cpu_stretch']:.1f} | {r['wake_extra'] * 1e6:.0f} | "
                   f"{r['ratio_span_own']:.3f} | {r['ratio_span_unstretched']:.3f} | "
                   f"{r['ratio_wall']:.3f} |")
    return out


def pool_table(rows: list) -> list:
    """Rows of ``validate`` on a pool; those with a modelled ``wake_cpu`` (``ratio_span_fit_cpu``)
    show the self-fitted one beside it, older ones their one-for-all fit."""
    out = ["| workload | P | others' cores | load before | real makespan | simulated | ratio | "
           "wake_cpu | real CPU | CPU sim / real | ratio, other wake_cpu | ratio, no pool | "
           "real wall / sim |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        real = r["real"]
        other = r.get("ratio_span_fit_cpu", r.get("ratio_span_one", float("nan")))
        out.append(f"| {r['kind']} | {r['nranks']} | {real['others_cores']:.2f} | "
                   f"{real['loadavg_before'][0]:.1f} | "
                   f"{real['tasks_span'] * 1e3:.1f} ms | {r['sim']['tasks_span'] * 1e3:.1f} ms | "
                   f"**{r['ratio_span']:.3f}** | {r['wake_cpu'] * 1e6:.0f} µs | "
                   f"{real['work_cpu'] * 1e3:.0f} ms | {r['ratio_cpu']:.2f} | "
                   f"{other:.3f} | {r['ratio_span_no_pool']:.3f} | {r['ratio_wall']:.3f} |")
    return out


def main() -> None:
    scale, central, validate, pooled, points = load(sys.argv[1:])
    for title, lines in (("validation", validate_table(validate)),
                         ("validation on a pool of cores", pool_table(pooled)),
                         ("METG", metg_table(scale, central)),
                         ("hot spots at 100 µs", hot_table(scale, points))):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
