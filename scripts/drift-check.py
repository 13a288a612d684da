"""Checks `provenant drift` against scipy and numpy on the same data, to 1e-9.

Each case writes a reference and a current CSV (seeded numpy data: continuous, low-
cardinality, binary and categorical columns, some cells missing), runs the binary, and
recomputes every column's method, score, KS statistic and PSI here the way Evidently does
(its default test selection and its stattest code, which call scipy), with PSI over the
reference's numpy quantile bins. Usage: drift-check.py PROVENANT_BINARY
"""

import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.spatial import distance

TOLERANCE = 1e-9
BINS = 10
TOP = 20


def column_data(rng, rows, shift):
    """Columns of one file; `shift` moves every distribution a little."""
    cont = rng.normal(10.0 + shift, 2.0 + shift / 2, rows)
    low = rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.4 - shift / 10, 0.3, 0.2, 0.1 + shift / 10])
    flag = rng.choice([0.0, 1.0], rows, p=[0.7 - shift / 10, 0.3 + shift / 10])
    answer = rng.choice(["yes", "no"], rows, p=[0.6 + shift / 10, 0.4 - shift / 10])
    colour = rng.choice(["red", "green", "blue", "grey", "pink"], rows, p=[0.3, 0.25, 0.2 - shift / 10, 0.15, 0.1 + shift / 10])
    many = rng.integers(0, 40, rows).astype(str)
    cells = {
        "cont": [repr(float(v)) for v in cont],
        "low": [repr(float(v)) for v in low],
        "flag": [repr(float(v)) for v in flag],
        "answer": list(answer),
        "colour": list(colour),
        "many": ["v" + v for v in many],
    }
    # A few missing cells in two columns.
    for name in ("cont", "colour"):
        for i in rng.choice(rows, rows // 50, replace=False):
            cells[name][i] = ""
    return cells


def write(path, cells):
    names = list(cells)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*(cells[n] for n in names)))


def values(cells, numeric):
    present = [c for c in cells if c != ""]
    if numeric:
        v = np.array([float(c) for c in present])
        return v[np.isfinite(v)]
    return np.array(present, dtype=object)


def is_numeric(cells):
    try:
        [float(c) for c in cells if c != ""]
        return True
    except ValueError:
        return False


def expected_column(ref, cur, numeric):
    """Evidently's default test for one column, computed with scipy."""
    keys = sorted(set(ref.tolist()) | set(cur.tolist()), key=str)
    n_values = len(keys)
    small = len(ref) <= 1000
    if small:
        if numeric and n_values > 5:
            method = "ks"
        else:
            method = "chi_square" if n_values > 2 else "z_test"
    else:
        method = "wasserstein_normed" if numeric and n_values > 5 else "jensen_shannon"
    counts = lambda data: {k: int(np.sum(data == k)) for k in keys}
    ref_counts, cur_counts = counts(ref), counts(cur)
    statistic = None
    if method == "ks":
        result = stats.ks_2samp(ref, cur, method="exact")
        if max(len(ref), len(cur)) <= 10000:
            auto = stats.ks_2samp(ref, cur)
            assert auto.pvalue == result.pvalue, "scipy's default is the exact method here"
        score, statistic = float(result.pvalue), float(result.statistic)
    elif method == "chi_square":
        k_norm = len(cur) / len(ref)
        f_exp = [ref_counts[k] * k_norm for k in keys]
        f_obs = [cur_counts[k] for k in keys]
        score = float(stats.chisquare(f_obs, f_exp)[1])
    elif method == "z_test":
        if len(set(ref.tolist())) == 1 and set(ref.tolist()) == set(cur.tolist()):
            score = 1.0
        else:
            key = keys[0]
            r = np.where(ref == key, 0, 1)
            c = np.where(cur == key, 0, 1)
            n1, n2 = len(r), len(c)
            p1, p2 = float(sum(r)) / n1, float(sum(c)) / n2
            p = float(p1 * n1 + p2 * n2) / (n1 + n2)
            z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
            score = float(2 * (1 - stats.norm.cdf(np.abs(z))))
    elif method == "wasserstein_normed":
        score = float(stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001))
    else:
        p = np.array([ref_counts[k] / len(ref) for k in keys])
        q = np.array([cur_counts[k] / len(cur) for k in keys])
        score = float(distance.jensenshannon(p, q))
    return method, score, statistic


def fill_zeroes(shares):
    nonzero = shares[shares != 0]
    smallest = nonzero.min()
    shares = shares.copy()
    np.place(shares, shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return shares


def expected_psi(ref, cur, numeric):
    """PSI over the reference profile's bins: numpy quantile edges, or the top values."""
    if numeric:
        distinct = np.unique(ref)
        if len(distinct) <= BINS:
            cuts = distinct[1:]
        else:
            cuts = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)))[1:-1]
        bins = len(cuts) + 1
        r = np.bincount(np.searchsorted(cuts, ref, side="right"), minlength=bins) / len(ref)
        c = np.bincount(np.searchsorted(cuts, cur, side="right"), minlength=bins) / len(cur)
    else:
        distinct, counts = np.unique(ref.astype(str), return_counts=True)
        order = sorted(zip(-counts, distinct))[:TOP]
        top = [v for _, v in order]
        r = np.array([np.sum(ref == v) for v in top] + [np.sum(~np.isin(ref, top))]) / len(ref)
        c = np.array([np.sum(cur == v) for v in top] + [np.sum(~np.isin(cur, top))]) / len(cur)
    r, c = fill_zeroes(r), fill_zeroes(c)
    return float(np.sum((r - c) * np.log(r / c)))


def check_case(binary, workdir, name, ref_rows, cur_rows, shift, seed):
    rng = np.random.default_rng(seed)
    ref_cells = column_data(rng, ref_rows, 0.0)
    cur_cells = column_data(rng, cur_rows, shift)
    ref_path, cur_path = workdir / f"{name}-reference.csv", workdir / f"{name}-current.csv"
    write(ref_path, ref_cells)
    write(cur_path, cur_cells)
    out = subprocess.run(
        [binary, "drift", "--reference", str(ref_path), "--current", str(cur_path)],
        capture_output=True, text=True,
    )
    if out.returncode not in (0, 1):
        sys.exit(f"{name}: provenant drift failed: {out.stderr}")
    printed = json.loads(out.stdout)
    report = {c["column"]: c for c in printed["drift"]["columns"]}
    worst = 0.0
    for column in ref_cells:
        numeric = is_numeric(ref_cells[column]) and is_numeric(cur_cells[column])
        ref, cur = values(ref_cells[column], numeric), values(cur_cells[column], numeric)
        method, score, statistic = expected_column(ref, cur, numeric)
        psi = expected_psi(ref, cur, numeric)
        got = report[column]
        if got["method"] != method:
            sys.exit(f"{name}/{column}: method {got['method']}, scipy side chose {method}")
        pairs = [("score", got["score"], score), ("psi", got["psi"], psi)]
        if statistic is not None:
            pairs.append(("statistic", got["statistic"], statistic))
        for what, ours, theirs in pairs:
            diff = abs(ours - theirs)
            if not diff <= TOLERANCE:
                sys.exit(f"{name}/{column}: {what} {ours!r}, scipy {theirs!r} (difference {diff:.3g})")
            worst = max(worst, diff)
        if got["current_values"] != len(cur) or got["reference_values"] != len(ref):
            sys.exit(f"{name}/{column}: value counts differ")
        print(f"  {name:<14} {column:<7} {method:<19} score {score:.6g} psi {psi:.6g}")
    return worst


def main():
    binary = sys.argv[1]
    cases = [
        # name, reference rows, current rows, shift, seed
        ("small", 500, 800, 0.0, 1),
        ("small-shifted", 500, 800, 0.3, 2),
        ("equal-sizes", 300, 300, 0.2, 3),
        ("large", 3000, 2000, 0.0, 4),
        ("large-shifted", 3000, 2000, 0.5, 5),
        ("many-current", 700, 12000, 0.1, 6),
    ]
    checked, worst = 0, 0.0
    with tempfile.TemporaryDirectory() as d:
        for case in cases:
            worst = max(worst, check_case(binary, Path(d), *case))
            checked += 6
    print(f"drift-check: {checked} column comparisons agree with scipy; largest difference {worst:.3g}")
    print(f"drift-check: {checked} passed, 0 failed")


if __name__ == "__main__":
    main()
