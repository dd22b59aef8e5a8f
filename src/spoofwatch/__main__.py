"""Allow ``python -m spoofwatch``."""

from spoofwatch.cli import main

raise SystemExit(main())
