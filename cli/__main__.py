import sys

from llmbench.cli.main import main

sys.exit(main())
