"""``mpitiny report RUN_DIR``: where the time of a finished run went, from what it left.

Reads the per-rank task tables (``tasks/rank-R.h5``), ``summary.json`` and ``failures/``, and
writes into ``RUN_DIR/report/``:

- ``report.txt``: per-rank busy / idle time, tasks and steals; task-duration percentiles; the
  time between a rank's consecutive tasks (what the engine costs per task, with any wait for
  work); busy time per family; the slowest tasks; the failures (first lines of each error);
- ``trace.json``: Chrome trace-event JSON (one complete event per task, named by its task id,
  ``sq[17]``, one track per rank, with its gid, the time it was queued, whether it was stolen
  and the bytes it read; the ranks' psutil CPU and memory samples as counters), which opens in
  Perfetto and chrome://tracing;
- with matplotlib installed (``pip install mpitiny[plots]``), PNG plots: ``gantt.png`` (a
  timeline per rank), ``durations.png`` (task-duration histogram), ``latency_cdf.png``
  (completion time after the run's first start, as a CDF), ``throughput.png`` (tasks finished
  per interval).

Everything works on columns of the task table (numpy), so a report of 10^6 tasks does not
build 10^6 Python objects; the Gantt plot draws at most ``MAX_BARS`` bars per rank (merged into
busy intervals beyond that), the Chrome trace is capped at ``MAX_EVENTS`` events, and its
events' ids are made per group, not per event (``task_ids``).

Tasks added while the run went on (``mpitiny.submit``) have rows like the DAG's own, their
gid being their key (``mpitiny.io.added``); they are named by the ids in
``tasks/rank-R.added`` (``name@key``) in the slowest tasks and the trace, and their busy time
is shown per function, as "added NAME" families.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mpitiny.io.added import ADDED_BIT, read_added_ids
from mpitiny.io.rundir import UPSTREAM_FAILED, groups_of, read_tasks, task_id

MAX_EVENTS = 1_000_000
MAX_BARS = 20_000


def make_report(run_dir: str, plots: bool = True) -> dict:
    """Write ``RUN_DIR/report/``; returns what was written and the text summary."""
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    rows = read_tasks(run_dir)
    ran = rows[rows["status"] != UPSTREAM_FAILED]
    out_dir = os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    t0 = float(ran["start"].min()) if len(ran) else 0.0
    text = summary_text(summary, ran, t0, run_dir)
    written = {"report.txt": os.path.join(out_dir, "report.txt")}
    from mpitiny.io.commit import write_atomic
    write_atomic(written["report.txt"], text.encode())
    written["trace.json"] = write_chrome_trace(os.path.join(out_dir, "trace.json"), ran, t0,
                                               summary["ranks"], read_samples(run_dir),
                                               groups_of(run_dir), read_added_ids(run_dir))
    if plots:
        try:
            import matplotlib
            matplotlib.use("Agg")
        except ImportError:
            plots = False
    if plots:
        written.update(write_plots(out_dir, ran, t0, summary["ranks"]))
    return {"text": text, "files": written}


def summary_text(summary: dict, ran: np.ndarray, t0: float, run_dir: str) -> str:
    lines = [f"run {summary['name']}: {summary['tasks']} tasks on {summary['ranks']} ranks "
             f"({', '.join(summary['hosts'])}), {summary['done']} done, {summary['failed']} failed, "
             f"{summary['upstream_failed']} upstream-failed; wall {summary['wall_seconds']:.3f} s"]
    span = float(ran["end"].max() - t0) if len(ran) else 0.0
    lines.append(f"first task start -> last task end: {span:.3f} s")
    lines.append("")
    lines.append("rank  tasks     busy_s     idle_s   busy%   steals  stolen_tasks  bytes_read")
    for r in summary["per_rank"]:
        mine = ran[ran["rank"] == r["rank"]]
        busy = float((mine["end"] - mine["start"]).sum())
        idle = max(span - busy, 0.0)
        pct = 100 * busy / span if span else 0.0
        lines.append(f"{r['rank']:>4} {len(mine):>6} {busy:>10.3f} {idle:>10.3f} {pct:>6.1f}% "
                     f"{r.get('steals', 0):>8} {r.get('stolen_tasks', 0):>13} "
                     f"{int(mine['bytes_read'].sum()):>11}")
    if len(ran):
        d = ran["end"] - ran["start"]
        q = np.percentile(d, [0, 50, 90, 99, 100]) * 1e3
        lines.append("")
        lines.append("task duration ms: min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f" % tuple(q))
        waited = ran["start"][ran["queued"] > 0] - ran["queued"][ran["queued"] > 0]
        if len(waited):
            lines.append("time queued before starting ms: p50 %.3f  p90 %.3f  max %.3f" %
                         tuple(np.percentile(waited, [50, 90, 100]) * 1e3))
        lines.append(f"tasks run after being stolen: {int(ran['stolen'].sum())}")
        gaps = between_tasks(ran)
        if len(gaps):
            lines.append("time between a rank's consecutive tasks ms: p50 %.3f  p90 %.3f  p99 %.3f"
                         % tuple(np.percentile(gaps, [50, 90, 99]) * 1e3))
            lines.append("  (the engine's time per task: claiming, fetching inputs, storing and "
                         "journaling outputs; and waits for work)")
        if summary.get("batches"):
            lines.append(f"batched: {summary['batched']} tasks in {summary['batches']} calls of "
                         "their batch form (each call's time split evenly among its tasks, "
                         "so 0 between them)")
        groups = groups_of(run_dir)
        added = read_added_ids(run_dir)
        own = ran["gid"] < ADDED_BIT
        lines.append("")
        lines.extend(family_lines(family_times(groups, ran[own])
                                  + added_family_times(added, ran[~own])))
        lines.append("")
        lines.append("slowest tasks:")
        for k in np.argsort(d)[::-1][:10]:
            row = ran[k]
            gid = int(row["gid"])
            name = task_id(groups, gid) if gid < ADDED_BIT else added.get(gid, f"#{gid}")
            lines.append(f"  {name:<40} {d[k] * 1e3:>10.3f} ms on rank "
                         f"{int(row['rank'])}, started at {row['start'] - t0:.3f} s")
    failures = summary.get("failures_first") or []
    if failures:
        lines.append("")
        lines.append(f"failures ({summary['failed']}; first {len(failures)} shown, all in "
                     f"{os.path.join(run_dir, 'failures')}/):")
        for f in failures:
            last = f["error"].strip().splitlines()[-1] if f["error"].strip() else ""
            lines.append(f"  {f['id']} on rank {f['rank']} ({f['host']}): {last}")
    return "\n".join(lines) + "\n"


def between_tasks(ran: np.ndarray) -> np.ndarray:
    """Seconds from the end of each task to the start of the next task on the same rank."""
    order = np.lexsort((ran["start"], ran["rank"]))
    rank, start, end = ran["rank"][order], ran["start"][order], ran["end"][order]
    same = rank[1:] == rank[:-1]
    return (start[1:] - end[:-1])[same]


def family_times(groups: list, ran: np.ndarray) -> list:
    """``(family, tasks, mean ms, busy s)`` of each family (or plain task) that ran, in DAG
    order: which part of the DAG the ranks' busy time went to (one ``bincount``: a DAG of
    10^5 plain tasks is 10^5 groups)."""
    firsts = np.array([g["first"] for g in groups], dtype=np.int64)
    which = np.searchsorted(firsts, ran["gid"], side="right") - 1
    tasks = np.bincount(which, minlength=len(groups))
    busy = np.bincount(which, weights=ran["end"] - ran["start"], minlength=len(groups))
    return [(groups[k]["name"], int(tasks[k]), float(busy[k] / tasks[k]) * 1e3, float(busy[k]))
            for k in np.flatnonzero(tasks).tolist()]


def added_family_times(added: dict, ran: np.ndarray) -> list:
    """``family_times`` of added tasks (rows ``ran``), one "added NAME" per function name
    (``added``: their ids, ``read_added_ids``)."""
    names = np.array([added.get(g, "?@").rsplit("@", 1)[0] for g in ran["gid"].tolist()],
                     dtype=object)
    out = []
    for name in sorted(set(names.tolist())):
        mine = ran[names == name]
        busy = float((mine["end"] - mine["start"]).sum())
        out.append((f"added {name}", len(mine), busy / len(mine) * 1e3, busy))
    return out


FAMILY_LINES = 20      # report.txt lists the busiest families beyond this many


def family_lines(families: list) -> list:
    """The busy time per family as report lines: all of them in DAG order, or the
    ``FAMILY_LINES`` busiest and one line for the rest."""
    shown, rest = families, []
    if len(families) > FAMILY_LINES:
        order = sorted(families, key=lambda f: -f[3])
        shown, rest = order[:FAMILY_LINES], order[FAMILY_LINES:]
    lines = ["family                               tasks   mean_ms      busy_s"]
    lines += [f"{name:<34} {n:>8} {mean:>9.3f} {total:>11.3f}" for name, n, mean, total in shown]
    if rest:
        lines.append(f"... {len(rest)} more families or tasks, "
                     f"{sum(f[1] for f in rest)} tasks, {sum(f[3] for f in rest):.3f} s busy")
    return lines


def write_run_trace(run_dir: str, nranks: int, groups: list | None = None) -> str:
    """``RUN_DIR/trace.json`` for ``mpitiny run --trace`` (rank 0, after the tables exist).

    The events are named from ``groups`` (``DAG.group_table()``), else from the gid table in
    ``tasks.h5``: ``summary.json`` is written after the trace (it may be missing, or an
    earlier incarnation's)."""
    rows = read_tasks(run_dir)
    ran = rows[rows["status"] != UPSTREAM_FAILED]
    t0 = float(ran["start"].min()) if len(ran) else 0.0
    if groups is None:
        groups = table_groups(run_dir)
    return write_chrome_trace(os.path.join(run_dir, "trace.json"), ran, t0, nranks,
                              read_samples(run_dir), groups, read_added_ids(run_dir))


def table_groups(run_dir: str) -> list | None:
    """The gid table (as ``groups_of`` gives it) from ``tasks.h5``, or None if it has none."""
    import h5py
    try:
        with h5py.File(os.path.join(run_dir, "tasks.h5"), "r") as f:
            if "groups" not in f:
                return None
            rows = f["groups"][()]
    except OSError:
        return None
    ids = "ids" in (rows.dtype.names or ())           # of listed tasks (newer tables)
    return [{"name": r["name"].decode(), "first": int(r["first"]), "size": int(r["size"]),
             "vars": json.loads(r["vars"]),
             **({"ids": r["ids"].decode().split("\n")} if ids and r["ids"] else {})}
            for r in rows]


def read_samples(run_dir: str) -> dict:
    """``{rank: samples}`` (psutil CPU %, RSS, I/O bytes) from the per-rank tables."""
    import h5py
    out = {}
    tdir = os.path.join(run_dir, "tasks")
    for name in sorted(os.listdir(tdir)):
        if name.endswith(".h5"):
            with h5py.File(os.path.join(tdir, name), "r") as f:
                if "samples" in f:
                    out[int(f.attrs["rank"])] = f["samples"][()]
    return out


def write_chrome_trace(path: str, ran: np.ndarray, t0: float, nranks: int,
                       samples: dict | None = None, groups: list | None = None,
                       added: dict | None = None) -> str:
    """Trace-event JSON: one "X" (complete) event per task (pid 0, tid = rank; name: the task
    id from ``groups``, the run's gid table, else the gid, and for an added task its id from
    ``added``; args: gid, status, time queued before it started, stolen, bytes read), and
    per rank "C" counter events from its psutil samples (CPU %, RSS MB) under pid 1."""
    rows = ran[np.argsort(ran["start"], kind="stable")][:MAX_EVENTS]
    if groups is not None:
        names = task_ids(groups, rows["gid"], escape=_json_text)
    else:
        names = rows["gid"].astype(str).astype(object)
    for k in np.flatnonzero(rows["gid"] >= ADDED_BIT).tolist():
        gid = int(rows["gid"][k])
        names[k] = _json_text((added or {}).get(gid, str(gid)))
    ts = ((rows["start"] - t0) * 1e6).round(3)
    dur = ((rows["end"] - rows["start"]) * 1e6).round(3)
    wait = np.where(rows["queued"] > 0, (rows["start"] - rows["queued"]) * 1e6, 0).round(1)
    from mpitiny.io.commit import atomic_output
    with atomic_output(path, "w", encoding="utf-8") as f:
        f.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
        for r in range(nranks):
            f.write(json.dumps({"ph": "M", "name": "thread_name", "pid": 0, "tid": r,
                                "args": {"name": f"rank {r}"}}) + ",\n")
        parts = [f'{{"ph":"X","name":"{n}","cat":"task","pid":0,"tid":{k},'
                 f'"ts":{t},"dur":{d},"args":{{"gid":{g},"status":{s},'
                 f'"queued_us":{w},"stolen":{st},"bytes_read":{b}}}}}'
                 for n, g, k, t, d, s, w, st, b in zip(
                     names.tolist(), rows["gid"].tolist(), rows["rank"].tolist(), ts.tolist(),
                     dur.tolist(), rows["status"].tolist(), wait.tolist(),
                     rows["stolen"].tolist(), rows["bytes_read"].tolist())]
        for rank, rank_samples in sorted((samples or {}).items()):
            for smp in rank_samples:
                parts.append(json.dumps({
                    "ph": "C", "name": f"rank {rank}", "pid": 1,
                    "ts": round((float(smp["time"]) - t0) * 1e6, 1),
                    "args": {"cpu_percent": float(smp["cpu_percent"]),
                             "rss_mb": int(smp["rss"]) >> 20}}))
        f.write(",\n".join(parts))
        f.write("\n]}\n")
    return path


def task_ids(groups: list, gids: np.ndarray, escape=None) -> np.ndarray:
    """The task id of each of ``gids`` (an object array of str), as ``task_id`` gives it one by
    one, but vectorised: the gids are sorted into their groups (``searchsorted`` over the
    groups' first gids); a plain task's id is its group's name, a task of a family over one
    range is ``name[start + index * step]``, both done for all groups at once; the other
    families (several variables, listed values) group by group (``divmod`` per variable,
    formatting only the values used). A gid outside the table gets ``"#GID"``. ``escape``
    (e.g. JSON string escaping) is applied to every name and value text: ids are made of them
    and ``[``, ``,``, ``]``. 10^6 ids: ~0.4 s CPU of one family, ~0.9 s over 10^5 families."""
    esc = escape or (lambda text: text)
    gids = np.asarray(gids, dtype=np.int64)
    out = np.empty(len(gids), dtype=object)
    if not len(gids) or not groups:
        out[:] = [f"#{g}" for g in gids.tolist()]
        return out
    firsts = np.array([g["first"] for g in groups], dtype=np.int64)
    ends = firsts + np.array([g["size"] for g in groups], dtype=np.int64)
    which = np.searchsorted(firsts, gids, side="right") - 1
    valid = which >= 0
    valid[valid] = gids[valid] < ends[which[valid]]
    for k in np.flatnonzero(~valid).tolist():
        out[k] = f"#{int(gids[k])}"
    which = np.where(valid, which, 0)
    ranges = [range(*g["vars"][0][1]["range"]) if len(g["vars"]) == 1 and
              "range" in g["vars"][0][1] else None for g in groups]
    kind = np.array([3 if "ids" in g else 0 if not g["vars"] else 1 if r is not None else 2
                     for g, r in zip(groups, ranges)], dtype=np.int8)[which]
    listed = np.flatnonzero(valid & (kind == 3))
    for k, gid in zip(listed.tolist(), gids[listed].tolist()):
        g = groups[int(which[k])]
        out[k] = esc(g["ids"][gid - g["first"]])
    for plain in (True, False):        # plain tasks, then families over one range
        at = np.flatnonzero(valid & (kind == (0 if plain else 1)))
        if not len(at):
            continue
        used, inverse = np.unique(which[at], return_inverse=True)
        inverse = inverse.reshape(-1)
        names = np.array([esc(groups[k]["name"]) for k in used.tolist()], dtype=object)[inverse]
        if plain:
            out[at] = names
            continue
        start = np.array([ranges[k].start for k in used.tolist()], dtype=np.int64)[inverse]
        step = np.array([ranges[k].step for k in used.tolist()], dtype=np.int64)[inverse]
        values = start + (gids[at] - firsts[which[at]]) * step
        out[at] = [f"{n}[{v}]" for n, v in zip(names.tolist(), values.tolist())]
    rest = np.flatnonzero(valid & (kind == 2))
    rest = rest[np.argsort(which[rest], kind="stable")]
    for chunk in np.split(rest, np.flatnonzero(np.diff(which[rest])) + 1) if len(rest) else ():
        out[chunk] = _family_ids(groups[int(which[chunk[0]])], gids[chunk], esc)
    return out


def _family_ids(group: dict, gids: np.ndarray, esc) -> list:
    """The ids of ``gids`` of one family (any variables), for ``task_ids``."""
    from mpitiny.dag.model import format_value
    index = gids - group["first"]
    texts = []
    for _, spec in reversed(group["vars"]):
        if "range" in spec:
            values = range(*spec["range"])
            index, pos = np.divmod(index, len(values))
            texts.append(list(map(str, (values.start + pos * values.step).tolist())))
        else:
            index, pos = np.divmod(index, len(spec["values"]))
            used, inverse = np.unique(pos, return_inverse=True)
            shown = np.array([esc(format_value(spec["values"][p])) for p in used.tolist()],
                             dtype=object)
            texts.append(shown[inverse.reshape(-1)].tolist())
    name = esc(group["name"])
    return [f"{name}[{','.join(t)}]" for t in zip(*reversed(texts))]


def _json_text(text: str) -> str:
    """``text`` as it goes between the quotes of a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def write_plots(out_dir: str, ran: np.ndarray, t0: float, nranks: int) -> dict:
    import matplotlib.pyplot as plt
    files = {}
    start, end = ran["start"] - t0, ran["end"] - t0
    fig, ax = plt.subplots(figsize=(10, 1 + 0.35 * nranks))
    for r in range(nranks):
        sel = ran["rank"] == r
        s, e = np.sort(start[sel]), np.sort(end[sel])
        if len(s) > MAX_BARS:                  # merge into MAX_BARS busy intervals
            edges = np.linspace(0, len(s), MAX_BARS + 1).astype(int)
            s, e = s[edges[:-1]], e[np.maximum(edges[1:] - 1, 0)]
        ax.broken_barh(list(zip(s, e - s)), (r - 0.4, 0.8), linewidth=0)
    ax.set_yticks(range(nranks), [f"rank {r}" for r in range(nranks)])
    ax.set_xlabel("seconds since the first task started")
    ax.set_title("tasks per rank")
    files["gantt.png"] = _save(fig, out_dir, "gantt.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    d = (ran["end"] - ran["start"]) * 1e3
    ax.hist(d, bins=min(100, max(10, int(np.sqrt(len(d))))), log=True)
    ax.set_xlabel("task duration (ms)")
    ax.set_ylabel("tasks")
    files["durations.png"] = _save(fig, out_dir, "durations.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    done = np.sort(end)
    ax.plot(done, np.arange(1, len(done) + 1) / max(len(done), 1))
    ax.set_xlabel("completion time after the first start (s)")
    ax.set_ylabel("fraction of tasks")
    files["latency_cdf.png"] = _save(fig, out_dir, "latency_cdf.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    span = float(done[-1]) if len(done) else 1.0
    bins = np.linspace(0, span if span > 0 else 1.0, 51)
    counts, _ = np.histogram(done, bins=bins)
    width = bins[1] - bins[0]
    ax.plot(bins[:-1] + width / 2, counts / width)
    ax.set_xlabel("seconds since the first task started")
    ax.set_ylabel("tasks finished per second")
    files["throughput.png"] = _save(fig, out_dir, "throughput.png")
    return files


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, f".{name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
