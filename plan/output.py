"""What `ocsim plan` writes: the curves (CSV + PNG) and the chosen topology (TOML + catalog)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ocsim.topology import ControlSpec, EdgeSpec, IspSpec, OriginSpec, Topology
from plan.inputs import PlanInputs
from plan.model import edge_names
from plan.search import Evaluated, SearchResult

__all__ = ["topology_for", "write_curves", "write_topology"]


def topology_for(p: PlanInputs, ev: Evaluated, catalog_file: Path | None = None) -> Topology:
    """The chosen candidate as the topology `ocsim up` runs: one origin whose uplink is the
    origin egress cap, and per ISP `n` edges named as the simulator named them."""
    c = ev.choice
    isps = {}
    for i, (isp, n) in enumerate(c.edges):
        edges = tuple(EdgeSpec(eid, isp, c.option.disk_bytes, c.policy) for eid in edge_names(isp, n))
        isps[isp] = IspSpec(isp, (f"10.{i + 1}.0.0/16",), edges, "UTC", c.window,
                            int(p.edge.nic_bps * p.edge.fill_share), None)
    origin = OriginSpec(port=0, catalog=str(catalog_file.resolve()) if catalog_file else None,
                        latency_ms=p.network.origin_rtt_ms, total_bandwidth_bps=p.targets.origin_egress_cap_bps)
    return Topology(origin, ControlSpec(port=0), isps)


def write_topology(topo: Topology, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `ocsim plan`: the cheapest candidate that met the targets\n" + topo.to_toml())
    return path


def write_curves(result: SearchResult, best: Evaluated | None, out: Path, target: float) -> tuple[Path, Path]:
    """`curves.csv` (every replay) and `curves.png`: offload vs disk per edge (per ISP, at
    the chosen policy, window and edge count) and origin egress vs edges (per ISP, at the
    chosen policy, window and disk)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "curves.csv", out / "curves.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["isp", "policy", "fill_window", "edges", "disk_bytes", "cost_per_edge", "offload", "hit_ratio",
                    "origin_peak_bps", "origin_bytes_sim", "bytes_sim", "pinned_bytes_sim", "startup_p90_s"])
        for policy, window, option, r in result.runs:
            w.writerow([r.isp, policy, window, r.edges, option.disk_bytes, option.cost, f"{r.offload:.4f}",
                        f"{r.hit_ratio:.4f}", f"{max(r.origin_by_hour) * result.bytes_factor[r.isp] * 8 / 3600:.0f}",
                        r.origin_bytes, r.bytes, r.pinned_bytes, f"{r.startup_p90():.3f}"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = best or (max(result.evaluated, key=lambda e: e.offload) if result.evaluated else None)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if ref is not None:
        c = ref.choice
        for isp, n in c.edges:
            pts = sorted((o.disk_bytes, r.offload) for pol, win, o, r in result.runs
                         if pol == c.policy and win == c.window and r.isp == isp and r.edges == n)
            axes[0].plot([x / 1e12 for x, _ in pts], [100 * y for _, y in pts], marker="o", label=f"{isp} x{n}")
            pts2 = sorted((r.edges, max(r.origin_by_hour) * result.bytes_factor[isp] * 8 / 3600)
                          for pol, win, o, r in result.runs
                          if pol == c.policy and win == c.window and r.isp == isp
                          and o.disk_bytes == c.option.disk_bytes)
            axes[1].plot([x for x, _ in pts2], [y / 1e9 for _, y in pts2], marker="o", label=isp)
        axes[0].axhline(100 * target, ls="--", color="grey", label="target")
        axes[0].set_title(f"offload vs disk per edge ({c.policy}, fill {c.window})")
        axes[1].set_title(f"origin egress at the peak hour vs edges ({c.option.disk_bytes / 1e12:g} TB each)")
    axes[0].set_xlabel("disk per edge (TB)")
    axes[0].set_ylabel("offload (%)")
    axes[1].set_xlabel("edges in the ISP")
    axes[1].set_ylabel("origin egress (Gbit/s, full scale)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
