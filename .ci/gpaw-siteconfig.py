# GPAW build configuration used by .ci/run (and by `GPAW_CONFIG=.ci/gpaw-siteconfig.py pip install gpaw`):
# serial build against Debian's libxc-dev and libopenblas-dev.
mpi = False
parallel_python_interpreter = False
libraries = ['xc', 'openblas']
library_dirs = ['/usr/lib/x86_64-linux-gnu']
include_dirs = ['/usr/include']
