# GPAW build configuration used by .ci/run (and by `GPAW_CONFIG=.ci/gpaw-siteconfig.py pip install gpaw`):
# serial build against Debian's libxc-dev and libopenblas-dev.
# gpaw 26.x compiles its C sources as C++17: the compiler must be a C++ one (with gcc the .c files are compiled as C
# and fail on `#include <algorithm>`). The "parallel_python_interpreter" keyword was removed in gpaw 26.
mpi = False
compiler = 'g++'
libraries = ['xc', 'openblas']
library_dirs = ['/usr/lib/x86_64-linux-gnu']
include_dirs = ['/usr/include']
