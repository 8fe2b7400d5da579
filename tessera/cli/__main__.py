"""``python -m tessera.cli``: the same as the ``tessera`` console script."""

from tessera.cli.app import main

raise SystemExit(main())
