"""Training X-Nets and their dense / grouped twins (`python -m xkern train`, `compare`).

data: local datasets and batch augmentation; recipes: the paper's optimiser settings;
loop: epochs, checkpoints, metrics, resume; distributed: torchrun / DDP; plot: curves.
Needs torch (and tqdm; matplotlib for the PNGs).
"""
