import sys

from overlaynet.plugins.cni import main

sys.exit(main())
