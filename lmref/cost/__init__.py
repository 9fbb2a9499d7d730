"""lmref.cost: what a model costs -- parameters and MACs per scope (``profile``, read off one traced
forward pass, so it counts the definitions), and a model's own FLOP report where it has one
(Lite-HRNet / Lite-HRNet Plus per block, the Plus paper's Figure 2: ``lmref.cost.litehrnet``).
Used by ``lmref info`` and the benchmark."""
from . import litehrnet
from .profile import BUFFER_SUFFIXES, MAC_RULES, profile  # noqa: F401

__all__ = ["profile", "MAC_RULES", "BUFFER_SUFFIXES", "report", "REPORTS"]

REPORTS = {"litehrnet": litehrnet.cost_report}     # architecture -> cost_report(cfg, input_size, params)


def report(arch, params, cfg, input_size):
    """The architecture's own cost report as text (``lmref info`` prints it), or None if it has none."""
    return REPORTS[arch](cfg, tuple(input_size), params) if arch in REPORTS else None
