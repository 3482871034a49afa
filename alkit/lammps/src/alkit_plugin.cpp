// Registers pair_style mtp and compute mtp/grade with LAMMPS (`plugin load <alkit lammps plugin-path>`).
#include "compute_mtp_grade.h"
#include "lammps.h"
#include "pair_mtp.h"
#include "plugin_abi.h"

using namespace LAMMPS_NS;

namespace {
Pair *make_pair(LAMMPS *lmp) { return new PairMTP(lmp); }
Compute *make_compute(LAMMPS *lmp, int narg, char **arg) { return new ComputeMTPGrade(lmp, narg, arg); }
}  // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  auto reg = reinterpret_cast<alkit_lmp_regfunc>(regfunc);
  alkit_lmp_plugin_t plugin;
  // LAMMPS compares this with its own version string and only warns when they differ
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "mtp";
  plugin.info = "alkit moment tensor potential (MLIP-2 .mtp files) with MaxVol extrapolation grade";
  plugin.author = "alkit";
  plugin.creator.v1 = reinterpret_cast<alkit_lmp_factory1 *>(&make_pair);
  plugin.handle = handle;
  (*reg)(&plugin, lmp);
  plugin.style = "compute";
  plugin.name = "mtp/grade";
  plugin.info = "MaxVol extrapolation grade of pair_style mtp (global max, per atom)";
  plugin.creator.v2 = reinterpret_cast<alkit_lmp_factory2 *>(&make_compute);
  (*reg)(&plugin, lmp);
}
