// pair_style mtp (see pair_mtp.h). Per local atom: gather its neighbours within the cutoff sorted by MTP type,
// run the core's site kernels (moments, adjoint, dV/dr), tally energy, forces and virial, and, on grading steps,
// the site's basis row times the inverse active-set matrix (the MaxVol grade).
#include "pair_mtp.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

using namespace LAMMPS_NS;

namespace {

const char *const SYMBOLS[] = {
    "X",  "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",  "S",
    "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho",
    "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po",
    "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md",
    "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};

int atomic_number(const std::string &s) {
  for (int z = 1; z < int(sizeof(SYMBOLS) / sizeof(SYMBOLS[0])); ++z)
    if (s == SYMBOLS[z]) return z;
  return 0;
}

// Rank 0 reads the file; every rank gets its bytes.
std::string read_all(LAMMPS *lmp, const std::string &path, const char *what) {
  int me = lmp->comm->me;
  std::string text;
  long n = -1;
  if (me == 0) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      text = ss.str();
      n = long(text.size());
    }
  }
  MPI_Bcast(&n, 1, MPI_LONG, 0, lmp->world);
  if (n < 0) lmp->error->all(FLERR, "pair_style mtp: cannot open {} file {}", what, path);
  text.resize(size_t(n));
  if (n > 0) MPI_Bcast(&text[0], int(n), MPI_CHAR, 0, lmp->world);
  return text;
}

}  // namespace

PairMTP::PairMTP(LAMMPS *lmp) : Pair(lmp) {
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;  // the virial is tallied per pair from dV_i/dr_ij (not a central force)
  centroidstressflag = CENTROID_NOTAVAIL;
  comm_reverse = 0;
  comm_reverse_off = 9;  // newton off: 3 force + 6 virial components of ghost atoms, reverse-communicated here
}

PairMTP::~PairMTP() {
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
  memory->destroy(gamma_atom_);
  memory->destroy(fbuf_);
  memory->destroy(vbuf_);
}

void PairMTP::allocate() {
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 1; i < n; i++)
    for (int j = i; j < n; j++) setflag[i][j] = 0;
}

void PairMTP::settings(int narg, char **arg) {
  if (narg < 1) error->all(FLERR, "Illegal pair_style mtp command: pair_style mtp FILE.mtp [als FILE] [grade_every N] [species El ...]");
  pot_file_ = arg[0];
  als_file_.clear();
  species_.clear();
  grade_every_ = 1;
  for (int k = 1; k < narg; ++k) {
    std::string key = arg[k];
    if (key == "als" && k + 1 < narg) {
      als_file_ = arg[++k];
    } else if (key == "grade_every" && k + 1 < narg) {
      grade_every_ = utils::inumeric(FLERR, arg[++k], false, lmp);
      if (grade_every_ < 1) error->all(FLERR, "pair_style mtp: grade_every must be >= 1");
    } else if (key == "species") {
      while (k + 1 < narg && atomic_number(arg[k + 1]) > 0) species_.push_back(arg[++k]);
      if (species_.empty()) error->all(FLERR, "pair_style mtp: 'species' needs element symbols");
    } else {
      error->all(FLERR, "pair_style mtp: unknown keyword {} (use als FILE, grade_every N, species El ...)", key);
    }
  }
  pot_text_ = read_all(lmp, pot_file_, "potential");
  try {
    mtp_ = alkit::parse_mtp(pot_text_);
  } catch (std::exception &e) {
    error->all(FLERR, "pair_style mtp: potential file {} is corrupt: {}", pot_file_, e.what());
  }
  const int spc = mtp_.basis.n_species;
  if (!mtp_.tag_species.empty()) {
    if (!species_.empty() && species_ != mtp_.tag_species)
      error->all(FLERR, "pair_style mtp: {} was made for species {} (in this type order), not {}", pot_file_,
                 utils::join_words(mtp_.tag_species, " "), utils::join_words(species_, " "));
    species_ = mtp_.tag_species;
  } else if (!species_.empty() && int(species_.size()) != spc) {
    error->all(FLERR, "pair_style mtp: {} has species_count = {} but {} species were given", pot_file_, spc,
               species_.size());
  }
  mtp_min_dist = mtp_.basis.rmin;
  p_ = 0;
}

// pair_coeff * * El1 El2 ... ElN (N = number of atom types; NULL for a type this style does not handle).
void PairMTP::coeff(int narg, char **arg) {
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mtp must be '* *' followed by one element per atom type ({} types)", ntypes);
  const int spc = mtp_.basis.n_species;
  std::vector<std::string> order = species_;  // untagged file without 'species': first appearance = type order
  type_map_.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; ++t) {
    std::string el = arg[1 + t];
    if (el == "NULL") continue;
    if (atomic_number(el) == 0) error->all(FLERR, "pair_coeff mtp: {} is not an element symbol", el);
    auto it = std::find(order.begin(), order.end(), el);
    if (it == order.end()) {
      if (!species_.empty())
        error->all(FLERR, "pair_coeff mtp: element {} is not a species of {} (its species: {})", el, pot_file_,
                   utils::join_words(species_, " "));
      order.push_back(el);
      it = order.end() - 1;
    }
    type_map_[t] = int(it - order.begin());
    if (type_map_[t] >= spc)
      error->all(FLERR, "pair_coeff mtp: {} has {} species but the types name more ({})", pot_file_, spc,
                 utils::join_words(order, " "));
  }
  if (species_.empty()) species_ = order;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = (type_map_[i] >= 0 && type_map_[j] >= 0) ? 1 : 0;
  if (!als_file_.empty()) read_active_set();
}

// alkit-als-2 (alkit.mtp.grade.ActiveSet.save): a format line, a JSON header line, then little-endian float64
// matrix (p x p), inverse (p x p) and int64 sources (p x 2).
void PairMTP::read_active_set() {
  std::string raw = read_all(lmp, als_file_, "active-set");
  size_t a = raw.find('\n');
  size_t b = a == std::string::npos ? a : raw.find('\n', a + 1);
  if (b == std::string::npos || raw.substr(0, a) != "alkit-als-2")
    error->all(FLERR, "pair_style mtp: {} is not an alkit active-set file (alkit-als-2)", als_file_);
  json h;
  try {
    h = json::parse(raw.substr(a + 1, b - a - 1));
  } catch (std::exception &e) {
    error->all(FLERR, "pair_style mtp: active-set file {} has a corrupt header: {}", als_file_, e.what());
  }
  const uint32_t crc = alkit::crc32(pot_text_);
  if (!h.contains("mtp_crc32") || h["mtp_crc32"].get<uint64_t>() != crc)
    error->all(FLERR, "pair_style mtp: active set {} was built for a different potential than {}", als_file_,
               pot_file_);
  std::vector<int> zs = h["species"].get<std::vector<int>>();
  std::vector<int> ours;
  for (auto &s : species_) ours.push_back(atomic_number(s));
  if (zs != ours)
    error->all(FLERR, "pair_style mtp: active set {} is for species with atomic numbers {}, the potential's are {}",
               als_file_, utils::join_words([&] { std::vector<std::string> v; for (int z : zs) v.push_back(std::to_string(z)); return v; }(), " "),
               utils::join_words(species_, " "));
  const std::string params = h["parameters"].get<std::string>(), mode = h["mode"].get<std::string>();
  rows_ = params == "all" ? 2 : (params == "linear" ? 1 : 0);
  if (!rows_) error->all(FLERR, "pair_style mtp: active set {} has unknown parameters {}", als_file_, params);
  cfg_mode_ = mode == "configuration" ? 1 : 0;
  energy_per_atom_ = h.value("energy_per_atom", true) ? 1 : 0;
  const int p = h["p"].get<int>();
  const int expect = rows_ == 2 ? mtp_.basis.n_params() : mtp_.basis.n_linear();
  if (p != expect)
    error->all(FLERR, "pair_style mtp: active set {} has {} parameters, the potential {}", als_file_, p, expect);
  const size_t need = 8 * (2 * size_t(p) * p + 2 * size_t(p));
  if (raw.size() - (b + 1) != need) error->all(FLERR, "pair_style mtp: active-set file {} is truncated", als_file_);
  ld_ = (p + 7) & ~7;
  inv_.assign(size_t(p) * ld_, 0.0);
  const char *src = raw.data() + b + 1 + 8 * size_t(p) * p;
  for (int l = 0; l < p; ++l)  // x86/arm: little endian
    std::memcpy(&inv_[size_t(l) * ld_], src + 8 * size_t(l) * p, 8 * size_t(p));
  p_ = p;
  row_.assign(ld_, 0.0);
  rowsum_.assign(ld_, 0.0);
}

void PairMTP::init_style() {
  if (type_map_.empty()) error->all(FLERR, "pair_style mtp: pair_coeff * * El ... is missing");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairMTP::init_one(int, int) { return mtp_.basis.rmax; }

void PairMTP::setup() { gamma_max_run = 0.0; }

// Basis row of the current site (work_ holds its moments and adjoint): linear coefficients (moment, species) and,
// for 'all', the radial coefficients of its type row.
void PairMTP::grade_row(int ti, int nn, double *row) {
  const alkit::Basis &B = mtp_.basis;
  std::fill(row, row + p_, 0.0);
  for (int a = 0; a < B.n_scalar; ++a) row[a] = work_.m[B.mapping[a]];
  row[B.off_species() + ti] = 1.0;
  if (rows_ == 2) alkit::site_radial_jacobian(B, nn, work_, row + B.radial_index(ti, 0, 0, 0));
}

double PairMTP::gamma_of_row(const double *row) {
  double g = 0.0;
  alkit::rows_grade(row, 1, ld_, inv_.data(), p_, &g);
  return g;
}

void PairMTP::compute(int eflag, int vflag) {
  ev_init(eflag, vflag);
  const alkit::Basis &B = mtp_.basis;
  const double *theta = mtp_.theta.data();
  double **x = atom->x, **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  const int newton = force->newton_pair;
  const double rc = B.rmax, rc2 = rc * rc;
  using_buf_ = !newton;
  if (using_buf_) {
    if (atom->nmax > buf_nmax_) {
      buf_nmax_ = atom->nmax;
      memory->destroy(fbuf_);
      memory->destroy(vbuf_);
      memory->create(fbuf_, buf_nmax_, 3, "pair:mtp:fbuf");
      memory->create(vbuf_, buf_nmax_, 6, "pair:mtp:vbuf");
    }
    for (int i = 0; i < nall; ++i) {
      for (int c = 0; c < 3; ++c) fbuf_[i][c] = 0.0;
      for (int c = 0; c < 6; ++c) vbuf_[i][c] = 0.0;
    }
  }
  const bool grade = p_ > 0 && (update->ntimestep % grade_every_ == 0);
  if (grade && atom->nmax > gamma_nmax_) {
    gamma_nmax_ = atom->nmax;
    memory->destroy(gamma_atom_);
    memory->create(gamma_atom_, gamma_nmax_, "pair:mtp:gamma");
  }
  if (grade && cfg_mode_) std::fill(rowsum_.begin(), rowsum_.end(), 0.0);
  double local_gmax = 0.0, local_mind2 = INFINITY, local_bad = 0.0, n_sites = 0.0;
  const int inum = list->inum;
  int n_rows = 0;
  if (grade && !cfg_mode_ && rowsbuf_.size() < size_t(inum) * ld_) {
    rowsbuf_.resize(size_t(inum) * ld_);
    gbuf_.resize(inum);
    rowatom_.resize(inum);
  }
  if (int(tcount_.size()) != B.n_species + 1) tcount_.assign(B.n_species + 1, 0);
  const int *ilist = list->ilist, *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const int ti = type_map_[type[i]];
    if (ti < 0) continue;
    n_sites += 1.0;
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    // neighbours within the cutoff (one pass over the skin list), then grouped by MTP type in list order (the
    // kernels want them sorted by type)
    cj_.clear();
    ct_.clear();
    cvec_.clear();
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    std::fill(tcount_.begin(), tcount_.end(), 0);
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const int t = type_map_[type[j]];
      if (t < 0) continue;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      const double r2 = dx * dx + dy * dy + dz * dz;
      if (r2 >= rc2) continue;
      local_mind2 = std::min(local_mind2, r2);
      cj_.push_back(j);
      ct_.push_back(t);
      cvec_.push_back(dx);
      cvec_.push_back(dy);
      cvec_.push_back(dz);
      ++tcount_[t + 1];
    }
    const int nn = int(cj_.size());
    for (int t = 0; t < B.n_species; ++t) tcount_[t + 1] += tcount_[t];
    if (int(nbr_.size()) < nn) {
      nbr_.resize(nn);
      ntype_.resize(nn);
      vec_.resize(3 * size_t(nn));
    }
    for (int c = 0; c < nn; ++c) {
      const int at = tcount_[ct_[c]]++;
      nbr_[at] = cj_[c];
      ntype_[at] = ct_[c];
      for (int d = 0; d < 3; ++d) vec_[3 * size_t(at) + d] = cvec_[3 * size_t(c) + d];
    }
    work_.reserve(B, nn);
    if (pair_grad_.size() < 3 * size_t(nn)) pair_grad_.resize(3 * size_t(nn));
    alkit::site_geometry(B, theta, ti, nn, vec_.data(), ntype_.data(), work_);
    const double V = alkit::site_moments(B, theta, ti, nn, work_);
    alkit::site_adjoint(B, theta, work_);
    alkit::site_forces(B, nn, work_, pair_grad_.data());
    if (!std::isfinite(V)) local_bad = 1.0;
    if (eflag_global) eng_vdwl += V;
    if (eflag_atom) eatom[i] += V;
    for (int n = 0; n < nn; ++n) {
      const double *d = &pair_grad_[3 * size_t(n)];
      const double *r = &vec_[3 * size_t(n)];
      const int j = nbr_[n];
      f[i][0] += d[0];
      f[i][1] += d[1];
      f[i][2] += d[2];
      double *fj = (using_buf_ && j >= nlocal) ? fbuf_[j] : f[j];
      fj[0] -= d[0];
      fj[1] -= d[1];
      fj[2] -= d[2];
      if (vflag_either) {
        // LAMMPS virial W = sum x . F = -sum_pairs r_ij (x) dV_i/dr_ij (symmetrised: the total is symmetric)
        const double v[6] = {-r[0] * d[0], -r[1] * d[1], -r[2] * d[2], -0.5 * (r[0] * d[1] + r[1] * d[0]),
                             -0.5 * (r[0] * d[2] + r[2] * d[0]), -0.5 * (r[1] * d[2] + r[2] * d[1])};
        if (vflag_global)
          for (int c = 0; c < 6; ++c) virial[c] += v[c];
        if (vflag_atom) {
          double *vj = (using_buf_ && j >= nlocal) ? vbuf_[j] : vatom[j];
          for (int c = 0; c < 6; ++c) {
            vatom[i][c] += 0.5 * v[c];
            vj[c] += 0.5 * v[c];
          }
        }
      }
    }
    if (grade) {
      if (cfg_mode_) {
        grade_row(ti, nn, row_.data());
        for (int k = 0; k < p_; ++k) rowsum_[k] += row_[k];
      } else {  // graded together after the loop (rows_grade)
        grade_row(ti, nn, &rowsbuf_[size_t(n_rows) * ld_]);
        rowatom_[n_rows++] = i;
      }
    }
  }
  if (n_rows > 0) {
    alkit::rows_grade(rowsbuf_.data(), n_rows, ld_, inv_.data(), p_, gbuf_.data());
    for (int r = 0; r < n_rows; ++r) {
      gamma_atom_[rowatom_[r]] = gbuf_[r];
      local_gmax = std::max(local_gmax, gbuf_[r]);
    }
  }
  if (using_buf_) {
    comm->reverse_comm(this);
    for (int i = 0; i < nlocal; ++i) {
      for (int c = 0; c < 3; ++c) f[i][c] += fbuf_[i][c];
      if (vflag_atom)
        for (int c = 0; c < 6; ++c) vatom[i][c] += vbuf_[i][c];
    }
  }
  for (int i = 0; i < nlocal && local_bad == 0.0; ++i)
    if (!std::isfinite(f[i][0]) || !std::isfinite(f[i][1]) || !std::isfinite(f[i][2])) local_bad = 1.0;
  if (grade && cfg_mode_) {
    MPI_Allreduce(MPI_IN_PLACE, rowsum_.data(), p_, MPI_DOUBLE, MPI_SUM, world);  // in place: no allocation
    double n_all = 0.0;
    MPI_Allreduce(&n_sites, &n_all, 1, MPI_DOUBLE, MPI_SUM, world);
    if (energy_per_atom_ && n_all > 0)
      for (auto &v : rowsum_) v /= n_all;
    const double g = gamma_of_row(rowsum_.data());
    for (int ii = 0; ii < inum; ++ii) gamma_atom_[ilist[ii]] = g;
    local_gmax = g;
  }
  double loc[3] = {grade ? local_gmax : 0.0, -std::sqrt(local_mind2), local_bad}, glob[3];
  MPI_Allreduce(loc, glob, 3, MPI_DOUBLE, MPI_MAX, world);
  min_distance = -glob[1];
  nonfinite = glob[2];
  if (grade) {
    gamma_max = glob[0];
    gamma_max_run = std::max(gamma_max_run, gamma_max);
    graded_step = update->ntimestep;
  }
}

int PairMTP::pack_reverse_comm(int n, int first, double *buf) {
  int m = 0;
  for (int i = first; i < first + n; ++i) {
    for (int c = 0; c < 3; ++c) buf[m++] = fbuf_[i][c];
    for (int c = 0; c < 6; ++c) buf[m++] = vbuf_[i][c];
  }
  return m;
}

void PairMTP::unpack_reverse_comm(int n, int *list, double *buf) {
  int m = 0;
  for (int k = 0; k < n; ++k) {
    const int j = list[k];
    for (int c = 0; c < 3; ++c) fbuf_[j][c] += buf[m++];
    for (int c = 0; c < 6; ++c) vbuf_[j][c] += buf[m++];
  }
}

double PairMTP::memory_usage() {
  double bytes = Pair::memory_usage();
  bytes += double(gamma_nmax_) * sizeof(double) + double(buf_nmax_) * 9 * sizeof(double);
  bytes += double(inv_.size()) * sizeof(double);
  return bytes;
}
