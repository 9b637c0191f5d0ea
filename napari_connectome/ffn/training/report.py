"""Turn a run's ``metrics.csv`` into ``metrics.png``: loss and mask precision/recall over steps.

matplotlib is imported here only (it is an optional extra), so training never needs it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from napari_connectome.errors import UserInputError


def read_metrics(path: str | Path) -> dict[str, dict[str, list[float]]]:
    """Columns of ``metrics.csv`` per split: ``{"train": {"step": [...], "loss": [...]}, ...}``."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} not found; it is written by `napari-connectome train`")
    out: dict[str, dict[str, list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            cols = out.setdefault(row["split"], {})
            for k, v in row.items():
                if k == "split" or v in ("", None):
                    continue
                cols.setdefault(k, []).append(float(v))
    return out


def plot_metrics(csv_path: str | Path, png_path: str | Path) -> Path:
    """Write a two-panel figure (loss; accuracy/precision/recall) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_metrics(csv_path)
    fig, (ax_loss, ax_mask) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    styles = {"train": {"alpha": 0.6, "lw": 1}, "val": {"marker": "o", "lw": 1.5}}
    for split, cols in data.items():
        style = styles.get(split, {})
        if "loss" in cols:
            ax_loss.plot(cols["step"][: len(cols["loss"])], cols["loss"], label=split, **style)
        for name in ("accuracy", "precision", "recall"):
            if name in cols and split == "val":
                ax_mask.plot(cols["step"][: len(cols[name])], cols[name], label=name, **style)
    ax_loss.set(xlabel="step", ylabel="sigmoid cross-entropy", title="loss")
    ax_mask.set(xlabel="step", ylim=(0, 1), title="object mask on the validation split")
    for ax in (ax_loss, ax_mask):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
