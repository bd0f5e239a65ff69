"""``python -m sidenet.cli``: the ``sidenet-bench`` console script (the tests run it this way too)."""

from sidenet.cli import main

raise SystemExit(main())
