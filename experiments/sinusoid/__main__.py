import sys

from experiments.sinusoid.main import main

sys.exit(main())
