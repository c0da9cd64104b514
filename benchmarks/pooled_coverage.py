"""Coverage and width of the pooled paired intervals (`stats.pooled_paired`) against the per-variant ones
(`stats.t_interval` of the paired differences, what `mtl3d study` reports as `paired`), by simulation.

    python benchmarks/pooled_coverage.py [--studies 20000] [--seeds 3]

Every simulated study has one control and V variants with no effect; each run (the control's too) adds normal noise,
and a variant's difference to the control at a seed is its run's noise minus the control run's. The pooled
interval assumes every run's noise has the same sd; the settings break that on purpose (one variant twice as noisy,
a control a quarter noisier, twice or half as noisy) to show what it costs. Prints one JSON object: per setting and method, the
coverage of the true difference (0) by the first variant's and the noisiest variant's interval, and the mean
half-width of the first variant's (in units of the runs' common noise sd).
"""

from __future__ import annotations

import argparse
import json
import random

from mtl3dcli.stats import pooled_paired, t_interval

# name -> (noise sd of each variant's runs, noise sd of the control's runs)
SETTINGS = {
    "3 variants, same noise": ([1.0] * 3, 1.0),
    "5 variants, same noise": ([1.0] * 5, 1.0),
    "8 variants, same noise": ([1.0] * 8, 1.0),
    "3 variants, the last twice as noisy": ([1.0, 1.0, 2.0], 1.0),
    "3 variants, the control a quarter noisier": ([1.0] * 3, 1.25),
    "3 variants, the control twice as noisy": ([1.0] * 3, 2.0),
    "3 variants, the control half as noisy": ([1.0] * 3, 0.5),
}


def simulate(sds: list[float], control_sd: float, args: argparse.Namespace, rng: random.Random) -> dict:
    noisiest = max(range(len(sds)), key=lambda i: sds[i])
    counts = {m: {"covered_first": 0, "covered_noisiest": 0, "width": 0.0} for m in ("pooled", "paired")}
    for _ in range(args.studies):
        control = [rng.gauss(0.0, control_sd) for _ in range(args.seeds)]
        differences = {f"v{i}": [rng.gauss(0.0, sd) - c for c in control] for i, sd in enumerate(sds)}
        pooled = pooled_paired(differences).intervals
        for method, interval_of in (("pooled", pooled.__getitem__),
                                    ("paired", lambda name: t_interval(differences[name]))):
            first, worst = interval_of("v0"), interval_of(f"v{noisiest}")
            counts[method]["covered_first"] += first.low <= 0.0 <= first.high
            counts[method]["covered_noisiest"] += worst.low <= 0.0 <= worst.high
            counts[method]["width"] += first.half_width
    return {method: {"coverage_first": round(c["covered_first"] / args.studies, 4),
                     "coverage_noisiest": round(c["covered_noisiest"] / args.studies, 4),
                     "mean_half_width_first": round(c["width"] / args.studies, 3)} for method, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = {name: simulate(sds, control_sd, args, rng) for name, (sds, control_sd) in SETTINGS.items()}
    print(json.dumps({"studies": args.studies, "seeds": args.seeds, "results": results}))


if __name__ == "__main__":
    main()
