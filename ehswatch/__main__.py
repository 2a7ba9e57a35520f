import sys

from ehswatch.cli import main

sys.exit(main())
