import sys

from experiments.coldstart.main import main

sys.exit(main())
