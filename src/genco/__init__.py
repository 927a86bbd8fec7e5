"""genco: generative creative optimization (GenCO, arXiv 2508.09730).

Pick, per ad impression, the combination of creative elements (title, image, highlight, tag, badge, call
to action) most likely to be clicked, learned from logs where only the whole combination was clicked or not.
"""

__version__ = "0.1.0"
