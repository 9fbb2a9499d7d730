"""lmref.ops: pure NumPy functions with torch-like names and signatures, one family per file.

Every op accepts float32 or float64 arrays, computes in that dtype and returns that dtype; anything
else raises. Every op is registered in ``lmref.trace.OPS`` and recorded inside ``lmref.trace()``.
"""
from .activation import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .heatmap import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .padding import *  # noqa: F401,F403
from .patches import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .resize import *  # noqa: F401,F403
from .shuffle import *  # noqa: F401,F403
