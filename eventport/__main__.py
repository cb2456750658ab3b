"""``python -m eventport``: the same as the ``eventport`` console script."""

from eventport.cli import main

raise SystemExit(main())
