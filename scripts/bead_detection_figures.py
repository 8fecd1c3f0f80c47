#!/usr/bin/env python3
"""Bead detection figures on the calibration samples (``/work/shared/calibration-samples`` or
the folder given): per view, balls found within 1 px / balls in the field (``truth.json``),
false detections (> 2 px from every true ball), median and max centre error (px), CPU s
(``time.process_time``, the least of ``--repeat`` runs: other load on the machine only adds).

usage: .venv/bin/python scripts/bead_detection_figures.py [SAMPLES_DIR] [--repeat N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.calibration.beads import detect_beads  # noqa: E402
from core.imaging.images import read_image  # noqa: E402


def figures(folder: Path, repeat: int):
    rows = []
    for d in sorted(p.parent for p in folder.glob("*/truth.json")):
        truth = json.loads((d / "truth.json").read_text())
        for view in ("ap", "lat", "plate_ap", "plate_lat"):
            f = d / f"{view}.dcm"
            if not f.exists():
                continue
            img = read_image(f)
            px = img.display()           # as the command line passes it (polarity 1 for DICOM)
            cpu = []
            for _ in range(repeat):
                t = time.process_time()
                b = detect_beads(px, 1)
                cpu.append(time.process_time() - t)
            row = {"sample": d.name, "view": view, "shape": list(px.shape), "detected": len(b),
                   "cpu_s": round(min(cpu), 3)}
            if view in truth.get("balls_px", {}):
                t = np.array(truth["balls_px"][view], float)[:, 1:]
                dist, _ = cKDTree(b.centres_px).query(t)
                ok = dist < 1.0
                row.update(found=int(ok.sum()), in_field=len(t),
                           false=int((cKDTree(t).query(b.centres_px)[0] > 2.0).sum()),
                           median_px=round(float(np.median(dist[ok])), 3), max_px=round(float(dist[ok].max()), 3))
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default="/work/shared/calibration-samples")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = figures(Path(a.folder), max(1, a.repeat))
    for r in rows:
        if a.json:
            print(json.dumps(r))
        elif "found" in r:
            print(f"{r['sample']:12s} {r['view']:9s} {r['shape'][0]:4d}px found {r['found']:3d}/{r['in_field']:3d} "
                  f"false {r['false']:2d} median {r['median_px']:.3f} max {r['max_px']:.3f} px cpu {r['cpu_s']:.3f} s")
        else:
            print(f"{r['sample']:12s} {r['view']:9s} {r['shape'][0]:4d}px detected {r['detected']:4d} cpu {r['cpu_s']:.3f} s")
    cage = [r for r in rows if "found" in r]
    found, total = sum(r["found"] for r in cage), sum(r["in_field"] for r in cage)
    print(f"cage views: {found}/{total} = {100 * found / max(total, 1):.1f} % found, "
          f"{sum(r['false'] for r in cage)} false; cpu max {max(r['cpu_s'] for r in rows):.3f} s")


if __name__ == "__main__":
    main()
