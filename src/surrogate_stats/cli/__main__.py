import sys

from surrogate_stats.cli._main import main

sys.exit(main())
