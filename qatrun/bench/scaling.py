"""``qatrun-bench --cases scaling``: one row per cpu-scale-* case (small CNN, ResNet-18 at 32x32), so that
the cost of a larger model can be predicted: ms per step of plain / single / pair, and the change-point
tracker's cost per step, its share of the pair step and its state in bytes per quantized weight.

The tracker's cost grows with the number of quantized weights (it is elementwise over them), the
steps with the model's FLOPs and the batch; ``tracker ms per 1M weights`` carries the first over
to another model, ``bytes/weight`` its memory (about 118 B per weight for the two runs together,
``metrics.ChangePointTracker``).
"""

from __future__ import annotations


def scaling_row(res: dict) -> dict:
    """The scaling figures of one case's result (``measure.run_case``)."""
    c, ms, tr = res["case"], res["ms_per_step"], res.get("tracker") or {}
    weights = tr.get("weights", 0)
    return {
        "case": c["name"], "model": c["model"], "batch": c["batch"],
        "input": f"{c['channels']}x{c['image_size']}x{c['image_size']}",
        "quantized_weights": weights,
        "plain_ms": ms["plain"], "single_ms": ms.get("single"), "pair_ms": ms["pair"],
        "pair_over_plain": ms["pair"] / ms["plain"],
        "tracker_ms": res["changepoint_ms"], "tracker_share": res["changepoint_fraction"],
        "tracker_bytes_per_weight": tr.get("bytes_per_weight"),
        "tracker_ms_per_mweight": res["changepoint_ms"] / (weights / 1e6) if weights else None,
    }


def format_scaling(rows: list[dict]) -> str:
    """The printed scaling table."""
    hdr = (f"  {'case':<17}{'model':<11}{'input':>9}{'batch':>7}{'q.weights':>11}{'plain':>9}{'single':>9}"
           f"{'pair':>9}{'pair/plain':>11}{'tracker':>9}{'share':>7}{'B/weight':>10}{'ms/1M w':>9}")
    lines = ["== scaling (CPU, eager; ms per step, median over rounds; tracker = change-point tracking)", hdr]
    for r in rows:
        bpw = "n/a" if r["tracker_bytes_per_weight"] is None else f"{r['tracker_bytes_per_weight']:.1f}"
        per = "n/a" if r["tracker_ms_per_mweight"] is None else f"{r['tracker_ms_per_mweight']:.1f}"
        single = "n/a" if r["single_ms"] is None else f"{r['single_ms']:.1f}"
        lines.append(f"  {r['case']:<17}{r['model']:<11}{r['input']:>9}{r['batch']:>7}{r['quantized_weights']:>11,}"
                     f"{r['plain_ms']:>9.1f}{single:>9}{r['pair_ms']:>9.1f}{r['pair_over_plain']:>10.2f}x"
                     f"{r['tracker_ms']:>9.2f}{100 * r['tracker_share']:>6.1f}%{bpw:>10}{per:>9}")
    return "\n".join(lines)
