"""A module whose import fails, as an app with a missing dependency does."""

import a_module_that_does_not_exist  # noqa: F401

app = None
