"""The static results dashboard: `python -m plrnn.dashboard` turns results/ into index.html.

One page, no network: per machine folder (CPU and GPU apart) every reproduced table beside the
paper's, the figures, the run metadata, links to the raw CSVs and to the asv site.
"""

from .build import BuildResult, build_dashboard

__all__ = ["build_dashboard", "BuildResult"]
