"""`python -m mtl3dcli ...` (used by torchrun: `torchrun --nproc_per_node 2 -m mtl3dcli train ...`)."""

from mtl3dcli.cli import main

main()
