"""``python -m service``."""

import gc
import sys

# No collections while the service imports (fastapi, pydantic, numpy: tens of thousands of
# long-lived objects, and full collections that find nothing to free); the application's
# lifespan freezes what exists then and turns collection back on (service.app).
gc.disable()

from service.cli import main  # noqa: E402  (after the collector is off)

sys.exit(main())
