"""Coverage of a sequential study's intervals, by simulation: how often the final 95% t-interval of a study that adds
seeds until it is narrow enough (`mtl3d study --half-width`) contains the true effect.

    python benchmarks/sequential_coverage.py [--studies 20000] [--half-width 1] [--start 3] [--max-seeds 10]

Per-seed paired differences are drawn from a normal distribution of mean 0 and each sd in `--sd`; every simulated
study starts from `--start` seeds and follows `stats.next_seed_count` (one seed at a time, the rule `mtl3d study`
uses) or, for comparison, jumps at once to the seeds the measured sd plans for (`stats.seeds_for_half_width`).
Prints one JSON object: per rule and sd, the coverage, the share of studies that met the width and the mean seeds.
"""

from __future__ import annotations

import argparse
import json
import random

from mtl3dcli.stats import next_seed_count, seeds_for_half_width, t_interval


def simulate(sd: float, rule: str, args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    covered = met = seeds = 0
    for _ in range(args.studies):
        values = [rng.gauss(0.0, sd) for _ in range(args.start)]
        # both rules stop where `next_seed_count` does; they differ in how many seeds they add
        while (wanted := next_seed_count([interval := t_interval(values)], args.half_width,
                                         args.max_seeds)) > len(values):
            if rule == "jump to the planned seeds":
                planned = seeds_for_half_width(interval.sd, args.half_width) or args.max_seeds
                wanted = min(args.max_seeds, max(wanted, planned))
            values += [rng.gauss(0.0, sd) for _ in range(wanted - len(values))]
        covered += interval.low <= 0.0 <= interval.high
        met += interval.half_width <= args.half_width
        seeds += len(values)
    return {"coverage": round(covered / args.studies, 4), "met": round(met / args.studies, 4),
            "mean_seeds": round(seeds / args.studies, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20000)
    parser.add_argument("--half-width", type=float, default=1.0)
    parser.add_argument("--start", type=int, default=3)
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--sd", type=float, nargs="+", default=[0.4, 0.7, 1.0, 1.5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = {rule: {str(sd): simulate(sd, rule, args, rng) for sd in args.sd}
               for rule in ("one seed at a time", "jump to the planned seeds")}
    print(json.dumps({"studies": args.studies, "half_width": args.half_width, "start": args.start,
                      "max_seeds": args.max_seeds, "results": results}))


if __name__ == "__main__":
    main()
