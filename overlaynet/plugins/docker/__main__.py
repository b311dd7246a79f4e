import sys

from overlaynet.plugins.docker.server import main

sys.exit(main())
