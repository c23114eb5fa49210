"""The project's static site in one folder: the documentation (mkdocs), the results dashboard,
the asv pages and the raw result files, linked to each other by relative links only.

    python -m plrnn.site build [--out DIR]      # from the repository root; default DIR: site/

Layout of DIR (any static host serves it; the docs and the dashboard also open from disk):

    index.html, *.html, api/   the documentation (docs/, mkdocs.yml)
    results/index.html         the results dashboard (python -m plrnn.dashboard)
    results/<machine>/...      the raw result files it links to, and results/asv/ (asv's JSON)
    asv/index.html             asv publish of the committed history (results/asv/)
    paper/*.csv                the published numbers (reproductions/paper/)
"""

from .build import SiteBuildError, build_site

__all__ = ["build_site", "SiteBuildError"]
