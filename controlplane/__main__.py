import sys

from controlplane.main import main

sys.exit(main())
