import sys

from experiments.semisup.main import main

sys.exit(main())
