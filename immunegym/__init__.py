"""immunegym: a world simulator of the tumor immune microenvironment for therapy planning.

Subpackages: :mod:`immunegym.ontology` (unified cell ontology, label harmonization) and
:mod:`immunegym.data` (AnnData schema, distributions, trajectories, real tables).
"""

__version__ = "0.1.0"
