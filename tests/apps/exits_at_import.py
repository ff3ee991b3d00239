"""A module that exits as it is imported, as an app checking its settings does."""

import sys

sys.exit("DATABASE_URL is not set")
