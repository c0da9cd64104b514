"""Coverage of a sequential study's intervals, by simulation: how often the final 95% t-interval of a study that adds
seeds until it is narrow enough (`mtl3d study --half-width`) contains the true effect.

    python benchmarks/sequential_coverage.py [--studies 20000] [--half-width 1] [--start 3] [--max-seeds 10]

Per-seed paired differences are drawn from a normal distribution of mean 0 and each sd in `--sd`; every simulated
study starts from `--start` seeds and follows `stats.next_seed_count` (one seed at a time, the rule `mtl3d study`
uses) or, for comparison, jumps at once to the seeds the measured sd plans for (`stats.seeds_for_half_width`). A
third rule is `mtl3d study --pooled`: three variants share one control, every run has the same noise (sd / sqrt(2)
each, so a paired difference spreads by sd), and the first variant's pooled interval (`stats.pooled_paired`) is
judged and scored. Prints one JSON object: per rule and sd, the coverage, the share of studies that met the width
and the mean seeds.
"""

from __future__ import annotations

import argparse
import json
import random

from mtl3dcli.stats import next_seed_count, pooled_paired, seeds_for_half_width, t_interval

POOLED = "pooled over 3 variants, one seed at a time"


def simulate(sd: float, rule: str, args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    if rule == POOLED:
        return simulate_pooled(sd, args, rng)
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


def simulate_pooled(sd: float, args: argparse.Namespace, rng: random.Random, variants: int = 3) -> dict[str, float]:
    """The --pooled rule: seeds are added to the control and every variant until the pooled intervals (all of one
    width) are within the half-width."""
    covered = met = seeds = 0
    run_sd = sd / 2 ** 0.5

    def seed_of_runs() -> list[float]:  # the control's run, then each variant's
        return [rng.gauss(0.0, run_sd) for _ in range(variants + 1)]

    for _ in range(args.studies):
        runs = [seed_of_runs() for _ in range(args.start)]
        while True:
            differences = {f"v{i}": [r[i + 1] - r[0] for r in runs] for i in range(variants)}
            interval = pooled_paired(differences).intervals["v0"]
            wanted = next_seed_count([interval], args.half_width, args.max_seeds)
            if wanted == len(runs):
                break
            runs.append(seed_of_runs())
        covered += interval.low <= 0.0 <= interval.high
        met += interval.half_width <= args.half_width
        seeds += len(runs)
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
               for rule in ("one seed at a time", "jump to the planned seeds", POOLED)}
    print(json.dumps({"studies": args.studies, "half_width": args.half_width, "start": args.start,
                      "max_seeds": args.max_seeds, "results": results}))


if __name__ == "__main__":
    main()
