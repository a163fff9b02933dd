"""immunegym: a world simulator of the tumor immune microenvironment for therapy planning.

Subpackages: :mod:`immunegym.ontology` (unified cell ontology, label harmonization) and
:mod:`immunegym.data` (AnnData schema, distributions, trajectories, real tables).
"""

__version__ = "0.1.0"

from immunegym.env.registration import register_envs as _register_envs  # noqa: E402

_register_envs()
