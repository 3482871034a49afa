#include "compute_mtp_grade.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_mtp.h"
#include "update.h"

using namespace LAMMPS_NS;

ComputeMTPGrade::ComputeMTPGrade(LAMMPS *lmp, int narg, char **arg) : Compute(lmp, narg, arg) {
  if (narg != 3) error->all(FLERR, "Illegal compute mtp/grade command: compute ID group mtp/grade");
  scalar_flag = 1;
  vector_flag = 1;
  size_vector = 5;
  extscalar = 0;
  extvector = 0;
  peratom_flag = 1;
  size_peratom_cols = 0;
  vector = values_;
}

ComputeMTPGrade::~ComputeMTPGrade() { memory->destroy(gamma_); }

void ComputeMTPGrade::init() {
  pair_ = dynamic_cast<PairMTP *>(force->pair_match("^mtp", 0));
  if (!pair_) error->all(FLERR, "compute mtp/grade needs pair_style mtp");
  if (!pair_->has_active_set())
    error->all(FLERR, "compute mtp/grade needs an active set: pair_style mtp FILE.mtp als FILE.als");
}

double ComputeMTPGrade::compute_scalar() {
  invoked_scalar = update->ntimestep;
  scalar = pair_->gamma_max;
  return scalar;
}

void ComputeMTPGrade::compute_vector() {
  invoked_vector = update->ntimestep;
  values_[0] = pair_->gamma_max;
  values_[1] = pair_->min_distance;
  values_[2] = pair_->nonfinite;
  values_[3] = pair_->gamma_max_run;
  values_[4] = double(pair_->graded_step);
}

void ComputeMTPGrade::compute_peratom() {
  invoked_peratom = update->ntimestep;
  if (atom->nmax > nmax_) {
    nmax_ = atom->nmax;
    memory->destroy(gamma_);
    memory->create(gamma_, nmax_, "mtp/grade:gamma");
    vector_atom = gamma_;
  }
  const double *g = pair_->gamma_atom();
  const int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; ++i) gamma_[i] = (g && (mask[i] & groupbit)) ? g[i] : 0.0;
}

double ComputeMTPGrade::memory_usage() { return double(nmax_) * sizeof(double); }
