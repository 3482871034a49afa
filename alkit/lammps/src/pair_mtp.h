// pair_style mtp: alkit's moment tensor potentials (and MLIP-2's) in LAMMPS, with the MaxVol extrapolation grade.
//
//   pair_style mtp FILE.mtp [als FILE.als] [grade_every N] [species El1 El2 ...]
//   pair_coeff * * El_type1 El_type2 ...        (NULL for types another hybrid sub-style handles)
//
// The site kernels are alkit's compiled core (alkit/mtp/csrc), the same code the Python engine runs.
#pragma once

#include <string>
#include <vector>

#include "pair.h"

#include "mtp_file.hpp"

namespace LAMMPS_NS {

class PairMTP : public Pair {
 public:
  PairMTP(class LAMMPS *);
  ~PairMTP() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void setup() override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;

  // read by compute mtp/grade
  bool has_active_set() const { return p_ > 0; }
  const double *gamma_atom() const { return gamma_atom_; }
  bigint graded_step = -1;     // last step whose forces came with a grade
  double gamma_max = 0.0;      // max grade of that step (all ranks)
  double gamma_max_run = 0.0;  // max grade since the start of the run
  double min_distance = 0.0;   // shortest neighbour distance of the last evaluation (all ranks)
  double nonfinite = 0.0;      // 1 if the last evaluation gave a non-finite energy or force
  double mtp_min_dist = 0.0;   // the potential's min_dist

 protected:
  std::string pot_file_, als_file_;
  std::vector<std::string> species_;  // the potential's species in type order
  alkit::MTPFile mtp_;
  std::vector<int> type_map_;         // LAMMPS type -> MTP type (-1: not handled)
  int grade_every_ = 1;
  std::string pot_text_;
  // active set
  int p_ = 0, ld_ = 0, rows_ = 0, cfg_mode_ = 0, energy_per_atom_ = 1;
  std::vector<double> inv_;           // p x ld_ (columns past p zero), for the blocked grade kernel
  // work space (grows, never shrinks)
  alkit::Work work_;
  std::vector<double> vec_, pair_grad_, row_, rowsum_, cvec_;
  std::vector<int> nbr_, ntype_, cj_, ct_, tcount_;
  std::vector<double> rowsbuf_, gbuf_;  // basis rows of this step's graded sites (nbh mode), their grades
  std::vector<int> rowatom_;
  double *gamma_atom_ = nullptr;
  int gamma_nmax_ = 0;
  double **fbuf_ = nullptr, **vbuf_ = nullptr;  // ghost contributions with newton off (reverse-communicated)
  int buf_nmax_ = 0;
  bool using_buf_ = false;

  void allocate();
  void read_active_set();
  void grade_row(int ti, int nn, double *row);
  double gamma_of_row(const double *row);
};

}  // namespace LAMMPS_NS
