import sys

from experiments.modelbased.main import main

sys.exit(main())
