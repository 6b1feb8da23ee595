"""Job files: parse, apply ``--set`` overrides, validate and expand sweeps (pure, no MPI).

A job file is TOML: one ``[job]`` table and one ``[[task]]`` table per task (see
``configs/README.md`` for every key).  :func:`load_job` returns a :class:`Job` whose
``cases`` list every task instance after sweeping list-valued parameters, or raises
:class:`ConfigError` listing every problem found, each naming the key and, for a misspelt
name, the closest valid one.
"""

from __future__ import annotations

import difflib
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .tasks import COMMON, OPS, REQUIRED, TASK_ONLY, Param, unavailable

__all__ = ["ConfigError", "Job", "Case", "load_job", "parse_set", "JOB_KEYS", "resolve_grid"]

#: Keys of the [job] table (the COMMON task keys are also accepted there, as defaults).
JOB_KEYS: dict[str, Param] = {
    "name": Param("str", "", "job name (default: the file name)"),
    "description": Param("str", "", "free text shown in the report header"),
    "ranks": Param("ranks", 2, "MPI ranks: an integer, or a list to run the job once per "
                   "rank count (a scaling sweep)"),
    "grid": Param("grid", "auto", '"auto" (near-square) or [pr, pc]'),
    "timeout": Param("float", 0.0, "seconds before the whole job is killed (0: none); "
                     "--timeout overrides", min=0.0),
    "calibrate": Param("bool", True, "measure alpha and beta (a short ping-pong) at the start "
                       "so every record carries the model's time"),
}


class ConfigError(Exception):
    """A job file cannot run; ``problems`` lists every reason (the message joins them)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Case:
    """One task instance: the task's position, its operation and its full parameters."""

    task_index: int
    name: str
    op: str
    params: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        """``name`` and the parameters that differ from their defaults."""
        spec = OPS[self.op]
        shown = [f"{k}={_fmt(self.params[k])}" for k in spec.params
                 if k in self.params and (spec.params[k].default is REQUIRED
                                          or spec.params[k].labelled
                                          or self.params[k] != spec.params[k].default)
                 and spec.params[k].kind != "ints"]
        shown += [f"{k}={_fmt(self.params[k])}" for k in ("dtype", "block")
                  if k in self.defaults and self.params.get(k) != self.defaults[k]]
        return " ".join([self.name, *shown])


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return str(v)


@dataclass
class Job:
    """A validated job: its settings and the expanded list of cases."""

    path: str
    name: str
    job: dict[str, Any]
    tasks: list[dict[str, Any]]
    cases: list[Case] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def rank_counts(self) -> list[int]:
        r = self.job["ranks"]
        return list(r) if isinstance(r, list) else [r]


def _suggest(word: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(sorted(valid))})"


def parse_set(item: str) -> tuple[list[str], Any]:
    """Split ``--set`` text ``key.path=value``; the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ConfigError([f"--set {item!r}: expected key=value, e.g. --set task.n=64"])
    key, _, text = item.partition("=")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    parts = [k.strip() for k in key.strip().split(".") if k.strip()]
    if not parts:
        raise ConfigError([f"--set {item!r}: empty key"])
    return parts, value


def _apply_sets(data: dict, sets: list[str]) -> list[str]:
    problems = []
    job = data.setdefault("job", {})
    tasks = data.get("task", [])
    for item in sets:
        try:
            parts, value = parse_set(item)
        except ConfigError as e:
            problems += e.problems
            continue
        if parts[0] == "job" and len(parts) == 2:
            job[parts[1]] = value
        elif parts[0] == "task" and len(parts) == 2:
            hit = False
            for t in tasks:
                spec = OPS.get(t.get("op"))
                if spec is not None and (parts[1] in spec.params or parts[1] in COMMON
                                         or parts[1] in TASK_ONLY):
                    t[parts[1]] = value
                    hit = True
            if not hit:
                problems.append(f"--set {item}: no task takes a parameter '{parts[1]}'")
        elif parts[0] == "task" and len(parts) == 3:
            sel = parts[1]
            chosen = [t for i, t in enumerate(tasks)
                      if sel == str(i) or sel == t.get("name") or
                      (not t.get("name") and sel == t.get("op"))]
            if not chosen:
                problems.append(f"--set {item}: no task with index or name '{sel}' (tasks are "
                                f"numbered from 0)")
            for t in chosen:
                t[parts[2]] = value
        elif len(parts) == 1 and (parts[0] in JOB_KEYS or parts[0] in COMMON):
            job[parts[0]] = value
        else:
            problems.append(f"--set {item}: key must be job.KEY, task.KEY or task.NAME.KEY "
                            f"(task NAME or 0-based index)")
    return problems


def _check_value(where: str, key: str, p: Param, v: Any, sweepable: bool = True
                 ) -> tuple[list[Any], list[str]]:
    """Validate ``v`` against ``p``; returns (the values to sweep, problems)."""
    if sweepable and isinstance(v, list) and p.kind not in ("ints", "pair", "block", "ranks",
                                                            "grid"):
        vals = v
    elif sweepable and isinstance(v, list) and p.kind in ("pair", "block") and v \
            and all(isinstance(x, list) for x in v):
        vals = v
    else:
        vals = [v]
    if not vals:
        return [], [f"{where}: '{key}' is an empty list (nothing to sweep)"]
    out, problems = [], []
    for x in vals:
        msg = _check_one(p, x)
        if msg:
            problems.append(f"{where}: '{key}' {msg}")
        else:
            out.append(float(x) if p.kind == "float" else x)
    return out, problems


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_one(p: Param, x: Any) -> str | None:
    k = p.kind
    if k == "int" and not _is_int(x):
        return f"must be an integer, got {x!r}"
    if k == "float" and not (_is_int(x) or isinstance(x, float)):
        return f"must be a number, got {x!r}"
    if k == "bool" and not isinstance(x, bool):
        return f"must be true or false, got {x!r}"
    if k in ("str", "path") and not isinstance(x, str):
        return f"must be a string, got {x!r}"
    if k == "pair" or (k == "block" and x != "auto"):
        if not (isinstance(x, list) and len(x) == 2 and all(_is_int(v) and v >= 1 for v in x)):
            extra = ' or "auto"' if k == "block" else ""
            return f"must be [rows, cols] of two positive integers{extra}, got {x!r}"
    if k == "ints":
        if not (isinstance(x, list) and x and all(_is_int(v) for v in x)):
            return f"must be a non-empty list of integers, got {x!r}"
        if p.min is not None and min(x) < p.min:
            return f"entries must be >= {p.min:g}, got {min(x)}"
    if k == "ranks":
        xs = x if isinstance(x, list) else [x]
        if not xs or not all(_is_int(v) and v >= 1 for v in xs):
            return f"must be a positive integer or a list of them, got {x!r}"
    if k == "grid" and x != "auto":
        if not (isinstance(x, list) and len(x) == 2 and all(_is_int(v) and v >= 1 for v in x)):
            return f'must be "auto" or [pr, pc] of two positive integers, got {x!r}'
    if p.choices and x not in p.choices:
        close = difflib.get_close_matches(str(x), [str(c) for c in p.choices], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"must be one of {', '.join(map(str, p.choices))}, got {x!r}{hint}"
    if k in ("int", "float"):
        if p.min is not None and x < p.min:
            return f"must be >= {p.min:g}, got {x!r}"
        if p.max is not None and x > p.max:
            return f"must be <= {p.max:g}, got {x!r}"
    return None


def resolve_grid(grid: Any, ranks: int) -> tuple[int, int]:
    """The grid shape for ``ranks`` ranks (near-square for "auto")."""
    if grid == "auto":
        pr = int(ranks ** 0.5)
        while ranks % pr:
            pr -= 1
        return pr, ranks // pr
    return int(grid[0]), int(grid[1])


def _parse(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such job file"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = ""
        if "end of document" in str(e):
            opened = _unclosed_bracket(text)
            if opened:
                where = (f"; the bracket opened at line {opened[0]}, column {opened[1]} "
                         f"is never closed")
        raise ConfigError([f"{path}: malformed TOML: {e}{where}"]) from None


def _unclosed_bracket(text: str) -> tuple[int, int] | None:
    """(line, column) of the last ``[`` or ``{`` never closed, outside strings and comments.

    tomllib reports an array left open at the end of the file only as "at end of document";
    this finds where it was opened.
    """
    stack: list[tuple[int, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        quote, escaped = None, False
        for col, ch in enumerate(line, 1):
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\" and quote == '"':
                    escaped = True
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                stack.append((lineno, col))
            elif ch in "]}" and stack:
                stack.pop()
    return stack[-1] if stack else None


def load_job(path: str | os.PathLike, sets: list[str] | None = None,
             np_override: int | None = None, check_available: bool = True) -> Job:
    """Read, override, validate and expand a job file; raise ConfigError on any problem."""
    path = Path(path)
    data = _parse(path)
    problems = _apply_sets(data, list(sets or []))
    for key in data:
        if key not in ("job", "task"):
            problems.append(f"{path.name}: unknown table [{key}]{_suggest(key, ['job', 'task'])}")
    raw_job = data.get("job", {})
    if not isinstance(raw_job, dict):
        raw_job = {}
        problems.append(f"{path.name}: 'job' must be a table [job]")
    raw_tasks = data.get("task", [])
    if not isinstance(raw_tasks, list) or not all(isinstance(t, dict) for t in raw_tasks):
        raw_tasks = []
        problems.append(f"{path.name}: tasks must be written as [[task]] tables")
    if not raw_tasks and not problems:
        problems.append(f"{path.name}: no [[task]] tables: nothing to run")

    # ---- [job]
    job: dict[str, Any] = {}
    valid_job = {**JOB_KEYS, **COMMON}
    for key, v in raw_job.items():
        if key not in valid_job:
            problems.append(f"[job]: unknown key '{key}'{_suggest(key, list(valid_job))}")
            continue
        vals, probs = _check_value("[job]", key, valid_job[key], v, sweepable=False)
        problems += probs
        if vals:
            job[key] = vals[0]
    for key, p in valid_job.items():
        job.setdefault(key, p.default)
    job["name"] = job["name"] or path.stem
    if np_override is not None:
        if not _is_int(np_override) or np_override < 1:
            problems.append(f"--np must be a positive integer, got {np_override!r}")
        else:
            job["ranks"] = np_override
    rank_counts = job["ranks"] if isinstance(job["ranks"], list) else [job["ranks"]]
    if job["grid"] != "auto" and _check_one(JOB_KEYS["grid"], job["grid"]) is None:
        pr, pc = job["grid"]
        for r in rank_counts:
            if _is_int(r) and pr * pc != r:
                problems.append(f"[job]: grid [{pr}, {pc}] needs {pr * pc} ranks but the job "
                                f"runs on {r} (set ranks = {pr * pc}, or grid = \"auto\")")

    # ---- [[task]]
    tasks: list[dict] = []
    cases: list[Case] = []
    names_seen: set[str] = set()
    skipped: list[str] = []
    for i, raw in enumerate(raw_tasks):
        op = raw.get("op")
        where = f"[[task]] #{i}" + (f" ({op})" if isinstance(op, str) else "")
        if not isinstance(op, str):
            problems.append(f"{where}: missing 'op' (one of: {', '.join(sorted(OPS))})")
            continue
        spec = OPS.get(op)
        if spec is None:
            problems.append(f"{where}: unknown operation '{op}'{_suggest(op, list(OPS))}")
            continue
        if check_available:
            why = unavailable(spec)
            if why and raw.get("optional") is True:
                skipped.append(f"{where}: skipped, operation '{op}' is not available in this "
                               f"build ({why})")
                continue
            if why:
                problems.append(f"{where}: operation '{op}' is not available in this build "
                                f"({why})")
                continue
        valid = {**TASK_ONLY, **COMMON, **spec.params}
        axes: list[tuple[str, list[Any]]] = []
        bad = False
        for key, v in raw.items():
            if key == "op":
                continue
            if key not in valid:
                problems.append(f"{where}: unknown key '{key}'{_suggest(key, list(valid))}")
                bad = True
                continue
            vals, probs = _check_value(where, key, valid[key], v)
            problems += probs
            bad = bad or bool(probs)
            axes.append((key, vals))
        given = {k for k, _ in axes}
        for key, p in spec.params.items():
            if p.default is REQUIRED and key not in given:
                problems.append(f"{where}: missing required parameter '{key}' ({p.help or p.kind})")
                bad = True
        for r in rank_counts:
            if _is_int(r) and r < spec.min_ranks:
                problems.append(f"{where}: '{op}' needs at least {spec.min_ranks} ranks, but the "
                                f"job runs on {r}")
                bad = True
        if bad:
            continue
        name = raw.get("name") or op
        if name in names_seen and raw.get("name"):
            problems.append(f"{where}: task name '{name}' is used twice")
        names_seen.add(name)
        base = {k: job[k] for k in COMMON}
        for key, p in spec.params.items():
            if p.default is not REQUIRED:
                base[key] = p.default
        base.update({"input": "", "output": "", "name": name})
        tasks.append({"op": op, **raw})
        keys = [k for k, _ in axes]
        for combo in itertools.product(*[vals for _, vals in axes]):
            params = {**base, **dict(zip(keys, combo, strict=True))}
            params["name"] = name
            problems += _check_case(where, op, params)
            cases.append(Case(i, name, op, params, {k: job[k] for k in COMMON}))
    if problems:
        raise ConfigError(problems)
    if not cases:
        raise ConfigError([f"{path.name}: every task was skipped: nothing to run", *skipped])
    return Job(str(path), job["name"], job, tasks, cases, skipped)


def _check_case(where: str, op: str, p: dict) -> list[str]:
    """Cross-parameter checks of one expanded case."""
    out = []
    if op in ("spmm", "sparse_matmul") and p["blocksize"] > p["n"]:
        out.append(f"{where}: blocksize {p['blocksize']} is larger than the matrix (n = "
                   f"{p['n']})")
    if op in ("cg", "gmres") and p["blocksize"] > p["nx"] ** 2:
        out.append(f"{where}: blocksize {p['blocksize']} is larger than the matrix (n = nx^2 = "
                   f"{p['nx'] ** 2})")
    return out
