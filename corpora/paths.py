"""Where the project sits on disk, and the team's ``shared/`` folder beside it.

Computed once here because the data folder, the shipped checkpoints and the benchmark's
baseline script are all found relative to the project root, and a second copy of that
arithmetic would silently go stale when a file moves.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = PROJECT_ROOT.parent / "shared"  # kept beside the project by CI and the team, never committed
