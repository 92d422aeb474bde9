import sys

from experiments.imputation.main import main

sys.exit(main())
