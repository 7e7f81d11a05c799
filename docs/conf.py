"""Sphinx configuration of the pillargraph docs (``make -C docs html``; warnings are errors)."""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # the package from this checkout, installed or not
sys.path.insert(0, str(HERE / "_ext"))  # pillargraph_docs: generated API, results and CLI pages

import pillargraph  # noqa: E402

project = "pillargraph"
author = "the pillargraph authors"
copyright = "2025, the pillargraph authors"
release = pillargraph.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "pillargraph_docs",
]
# No sphinx.ext.intersphinx: the build must work offline, and intersphinx downloads inventories.

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []

# autodoc / autosummary / napoleon
autosummary_generate = False          # pillargraph_docs writes the pages; autosummary only draws tables
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False    # torch.nn.Module's docstrings are not ours
autodoc_mock_imports = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shapes"]
napoleon_use_rtype = False

# myst (benchmark results are Markdown)
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]   # results files may skip heading levels

# HTML
html_theme = "furo"
html_title = f"pillargraph {release}"
html_static_path = []
