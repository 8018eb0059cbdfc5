"""``python -m neurotomy.cli …`` (and ``accelerate launch -m neurotomy.cli …``) runs the command."""

import sys

from neurotomy.cli import main

sys.exit(main())
