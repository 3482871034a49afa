// compute ID group mtp/grade: the MaxVol extrapolation grade of pair_style mtp (which must have an active set).
//   scalar: max gamma of the last graded step;
//   vector: [1] max gamma of the last graded step, [2] shortest interatomic distance, [3] 1 if the energy or a force
//           was not finite, [4] max gamma since the start of the run, [5] the step that was graded last;
//   per-atom: the grade of each atom's neighbourhood (configuration mode: every atom carries the structure's).
// Usable by fix halt (break), thermo, variables and dumps (dump_modify skip/thresh to keep extrapolative frames).
#pragma once

#include "compute.h"

namespace LAMMPS_NS {

class PairMTP;

class ComputeMTPGrade : public Compute {
 public:
  ComputeMTPGrade(class LAMMPS *, int, char **);
  ~ComputeMTPGrade() override;
  void init() override;
  double compute_scalar() override;
  void compute_vector() override;
  void compute_peratom() override;
  double memory_usage() override;

 private:
  PairMTP *pair_ = nullptr;
  int nmax_ = 0;
  double *gamma_ = nullptr;
  double values_[5];
};

}  // namespace LAMMPS_NS
