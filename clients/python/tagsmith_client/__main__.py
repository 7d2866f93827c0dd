"""`python -m tagsmith_client` runs the `tagsmith` command."""

import sys

from tagsmith_client.cli import main

sys.exit(main())
