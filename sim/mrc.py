"""Miss-ratio curves: replay each policy over a range of cache sizes; CSV and PNG out."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sim.replay import replay
from sim.steering import assign_edges
from sim.trace import Trace

__all__ = ["DEFAULT_FRACTIONS", "MRCPoint", "miss_ratio_curve", "write_mrc"]

DEFAULT_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True, slots=True)
class MRCPoint:
    policy: str
    fraction: float          # cache size per edge / the trace's unique bytes
    cache_bytes: int
    object_miss_ratio: float
    byte_miss_ratio: float


def miss_ratio_curve(trace: Trace, policies: list[str], edges: int = 1,
                     fractions: tuple[float, ...] = DEFAULT_FRACTIONS) -> list[MRCPoint]:
    unique = trace.unique_bytes
    assignment = assign_edges(trace.keys, edges)
    points = []
    for policy in policies:
        for fraction in fractions:
            capacity = max(1, int(fraction * unique))
            total = replay(trace, policy, capacity, edges, assignment=assignment).total.to_dict()
            points.append(MRCPoint(policy, fraction, capacity, total["object_miss_ratio"],
                                   total["byte_miss_ratio"]))
    return points


def write_mrc(points: list[MRCPoint], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``mrc.csv`` and ``mrc.png`` (byte and object miss ratio vs cache size)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "mrc.csv", out / "mrc.png"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["policy", "cache_fraction", "cache_bytes", "object_miss_ratio", "byte_miss_ratio"])
        for p in points:
            writer.writerow([p.policy, p.fraction, p.cache_bytes, f"{p.object_miss_ratio:.6f}",
                             f"{p.byte_miss_ratio:.6f}"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for policy in dict.fromkeys(p.policy for p in points):
        mine = [p for p in points if p.policy == policy]
        xs = [100 * p.fraction for p in mine]
        style = "--" if policy == "belady" else "-"
        axes[0].plot(xs, [p.byte_miss_ratio for p in mine], style, marker="o", label=policy)
        axes[1].plot(xs, [p.object_miss_ratio for p in mine], style, marker="o", label=policy)
    for ax, title in zip(axes, ("byte miss ratio", "object miss ratio")):
        ax.set_xscale("log")
        ax.set_xlabel("cache size per edge (% of the trace's unique bytes)")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path
