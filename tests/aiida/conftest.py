"""The AiiDA tests run in an environment of their own (README's test command): aiida-core
pins click below the version huggingface-hub needs. Their AiiDA configuration folder is a
temporary one, never the user's ``~/.aiida``."""

import os
import tempfile

os.environ.setdefault("AIIDA_PATH", tempfile.mkdtemp(prefix="zoo-aiida-"))
