"""Contract checks for plugin authors' tests: `check_stage`, `check_metric`, `synth_audio`.

They live in the tooling plugin (`restorekit_tools.testing`), as pytest keeps its
pytester in a plugin; this name stays the documented way in.
"""

from restorekit_tools.testing import *  # noqa: F401,F403
from restorekit_tools.testing import __all__  # noqa: F401
