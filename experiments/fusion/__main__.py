import sys

from experiments.fusion.main import main

sys.exit(main())
