"""`mtl3d study`: a grid of variants x seeds, each trained and evaluated as an ordinary run, summarized with intervals.

    mtl3d study --preset demo --seeds 3 --variants noreg,reg,2d-control,crossview,low-data=0.25

    <out>/study.yaml              the resolved grid (a rerun with other settings is refused)
    <out>/runs/<variant>/seed<k>  ordinary run folders (weights/, metrics.jsonl, results.csv, eval.<data>.json)
    <out>/results.csv             one row per run: variant, seed, every scalar metric, Delta_m vs its control
    <out>/summary.json, .md       per variant and metric: mean, sd and 95% t-interval over seeds; paired differences
                                  to the control (same seeds) in every primary metric and in Delta_m; Delta_m's
                                  interval again with the noise pooled over the variants of one control (a block
                                  design: narrower if every run's noise is the same); the seeds a +/- 1 point
                                  Delta_m interval would need at that spread; with --eval-data,
                                  that spread split into what the study's data and each other set share (the
                                  trained weights' own) and what each set adds (its sample of scenes); the
                                  environments the runs trained in (a bit-identical rerun needs the same one)
    <out>/plots/metrics.png       means with their intervals per variant; plots/curves.png: every run's validation

Variants are comma-separated; "+" combines modifiers (e.g. "noreg+low-data=0.25"):
    noreg           the regularizer off: the control
    reg             the preset's regularizer
    reg-alpha=X     the regularizer with alpha_t = X for every task
    crossview       perspective rays plus cross-view supervision between views of a scene (needs cameras)
    2d-control      a training-only 2D branch of the regularizer's size on the same projected features: no rays,
                    no 3D; if `reg` beats it, the gain comes from the 3D structure, not from an extra branch
    low-data=F      train on a fraction F of the training scenes (the same scenes for every seed)
    NAME:KEY=VALUE[;KEY=VALUE]   any config override, e.g. "samples64:regularizer.samples=64"
Each variant is compared with its control: `noreg` plus the variant's data modifiers (added to the grid if absent).

Finished runs are kept, an interrupted run resumes from its checkpoint, so rerunning the command finishes the grid.
A study folder grows: a rerun may ask for more seeds, other variants or another `--eval-data` set and trains or
scores only what is missing, as long as every run stays the run it was (same preset, data, overrides and steps;
a variant name keeps its definition: each run's config.yaml is checked).
`--half-width H --max-seeds M` makes the seed count sequential: after `--seeds` seeds, seeds are added one at a time
until every variant's paired Delta_m interval is within +/- H points or M seeds are reached (`stats.next_seed_count`);
with `--pooled`, a variant that shares its control with others is judged by its pooled interval.
`--jobs N` trains N runs at once in worker processes (`runner.run_parallel`); `--launcher submitit` submits each run
as a job, on SLURM or with submitit's local executor (`cluster`, docs/cluster.md).

Modules, each importing only those before it: `spec` (the grid, StudySpec, its launcher, run folders), `runs` (one
run: trained, scored, training and scoring it), `summary` (the numbers), `report` (the files: results.csv,
summary.json/.md, plots), `cluster` (the submitit launcher), `runner` (running the grid).
"""

from mtl3dcli.commands.study.report import _cell, paired_cell, summary_markdown, write_summary
from mtl3dcli.commands.study.runner import run_study, train_and_evaluate
from mtl3dcli.commands.study.spec import (LauncherSpec, StudySpec, Variant, load_spec, parse_variant, run_dir,
                                          study_grid, with_launcher)
from mtl3dcli.commands.study.summary import delta_m_vs

__all__ = ["LauncherSpec", "StudySpec", "Variant", "_cell", "delta_m_vs", "load_spec", "paired_cell", "parse_variant",
           "run_dir", "run_study", "study_grid", "summary_markdown", "train_and_evaluate", "with_launcher",
           "write_summary"]
