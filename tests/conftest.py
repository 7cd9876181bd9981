"""pytest configuration shared by every test folder: ``tests/`` on ``sys.path`` for :mod:`helpers`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
