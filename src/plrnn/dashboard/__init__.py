"""The static results dashboard: `python -m plrnn.dashboard` turns results/ into index.html.

One page, no network. It opens with the headline: one row per paper artifact, the paper's number
beside each machine's best (every column labelled CPU or GPU), and a chart per machine of the
headline kernels' asv history (PNGs written beside the page). Then per machine folder (CPU and GPU
apart) every reproduced table beside the paper's, the figures, the run metadata, links to the raw
CSVs and to the asv site.
"""

from .build import BuildResult, build_dashboard

__all__ = ["build_dashboard", "BuildResult"]
