// alkit's compiled MTP core: moment tensor potentials (Shapeev 2016) in MLIP-2's parametrisation.
//
// Why alkit has its own core (motep stays the oracle in the tests): motep's train mode forms the full Jacobian
// dF/dtheta of every force component for every configuration, which makes one loss+gradient evaluation 45x the
// cost of a force call at level 16. Here the loss gradient is computed in reverse mode: per site, one forward pass
// (moments, their adjoints = dV/dm, forces), then one tangent pass along the loss' force/stress residuals and a
// second-order adjoint, so the gradient over *all* parameters costs a small multiple of one E+F evaluation.
//
// Layout follows LAMMPS pair styles / MLIP-2: flat arrays, CSR neighbour lists built once per structure, per-thread
// workspaces that grow but are never freed between calls (no allocation per MD step once warmed up).
//
// Determinism: every parallel loop writes per-site (evaluation) or per-block (training) results into their own
// slots and reduces them in a fixed order afterwards, so results are bit-identical for any number of threads.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace alkit {

// ------------------------------------------------------------------------------------------------------------
// Basis (the structure of a potential) and its parameter vector
// ------------------------------------------------------------------------------------------------------------
// Parameters are one flat vector theta in motep's order: moment_coeffs (n_scalar), species_coeffs (n_species),
// radial_coeffs[ti][tj][mu][beta] (n_species^2 * n_mu * n_rb).
struct Basis {
    int n_species = 0, n_mu = 0, n_rb = 0;
    double rmin = 0.0, rmax = 0.0, scaling = 1.0;
    int n_moments = 0, n_basic = 0, n_scalar = 0, n_times = 0;
    int n_mono = 0;
    std::vector<int> basic_mu, basic_mono;       // per basic moment: radial function, monomial id
    // Monomials x^a y^b z^c of the unit vector: those of the basic moments plus every monomial below them (the set is
    // closed downward), ordered by degree. Each is then its parent times one unit-vector component (one multiply per
    // neighbour), and each gradient component is a multiple of a lower monomial (d/dx x^a y^b z^c = a x^(a-1) y^b z^c),
    // so no gradient arrays are formed: that halves the site's working set, which must stay in L1 for speed.
    std::vector<int> mono_a, mono_b, mono_c, mono_nu;
    std::vector<int> mono_parent, mono_axis;     // g_q = g_parent * u_axis (q > 0; q = 0 is the constant 1)
    std::vector<int> mono_lower;                 // [q][axis]: index of the monomial one power lower, -1 if none
    std::vector<int> qk_start, qk;               // basic moments of each monomial (CSR)
    struct Times { int i, j, k; double mult; };  // m[k] += mult * m[i] * m[j], in file order; packed so the
    std::vector<Times> tree;                     // per-site sweeps read one stream
    std::vector<char> t_first;                   // entry is the first write to its moment (assign, not add)
    std::vector<int> mapping;                    // scalar moments (multiplied by moment_coeffs)

    std::vector<char> written;                   // moment k is the output of some tree entry
    bool unwritten(int k) const { return !written[k]; }
    int off_species() const { return n_scalar; }
    int off_radial() const { return n_scalar + n_species; }
    int n_linear() const { return n_scalar + n_species; }
    int n_radial() const { return n_species * n_species * n_mu * n_rb; }
    int n_params() const { return n_linear() + n_radial(); }
    int radial_index(int ti, int tj, int mu, int b) const {
        return off_radial() + ((ti * n_species + tj) * n_mu + mu) * n_rb + b;
    }

    void build(int species_count, int radial_funcs_count, int radial_basis_size, double min_dist, double max_dist,
               double scale, int alpha_moments_count, const int* basic, int nbasic, const int* times, int ntimes,
               const int* map, int nmap) {
        if (species_count < 1) throw std::invalid_argument("species_count must be >= 1");
        if (radial_funcs_count < 1) throw std::invalid_argument("radial_funcs_count must be >= 1");
        if (radial_basis_size < 1) throw std::invalid_argument("radial_basis_size must be >= 1");
        if (!(min_dist >= 0.0 && min_dist < max_dist && std::isfinite(max_dist)))
            throw std::invalid_argument("need 0 <= min_dist < max_dist");
        if (!(std::isfinite(scale))) throw std::invalid_argument("scaling is not finite");
        n_species = species_count; n_mu = radial_funcs_count; n_rb = radial_basis_size;
        rmin = min_dist; rmax = max_dist; scaling = scale;
        n_moments = alpha_moments_count; n_basic = nbasic; n_times = ntimes; n_scalar = nmap;
        if (n_basic > n_moments) throw std::invalid_argument("alpha_index_basic_count > alpha_moments_count");
        basic_mu.assign(n_basic, 0); basic_mono.assign(n_basic, 0);
        // the downward closure of the basic moments' monomials, sorted by (degree, a, b, c)
        std::vector<std::array<int, 3>> monos;
        auto add_closed = [&](std::array<int, 3> m0) {
            std::vector<std::array<int, 3>> stack{m0};
            while (!stack.empty()) {
                auto m = stack.back();
                stack.pop_back();
                if (std::find(monos.begin(), monos.end(), m) != monos.end()) continue;
                monos.push_back(m);
                for (int ax = 0; ax < 3; ++ax)
                    if (m[ax] > 0) { auto l = m; --l[ax]; stack.push_back(l); }
            }
        };
        for (int k = 0; k < n_basic; ++k) {
            int mu = basic[4 * k], a = basic[4 * k + 1], b = basic[4 * k + 2], c = basic[4 * k + 3];
            if (mu < 0 || mu >= n_mu || a < 0 || b < 0 || c < 0 || a + b + c > 64)
                throw std::invalid_argument("alpha_index_basic entry " + std::to_string(k) + " is out of range");
            basic_mu[k] = mu;
            add_closed({a, b, c});
        }
        auto by_degree = [](const std::array<int, 3>& x, const std::array<int, 3>& y) {
            const int dx = x[0] + x[1] + x[2], dy = y[0] + y[1] + y[2];
            return dx != dy ? dx < dy : x > y;
        };
        std::sort(monos.begin(), monos.end(), by_degree);
        n_mono = int(monos.size());
        auto index_of = [&](const std::array<int, 3>& m) {
            return int(std::lower_bound(monos.begin(), monos.end(), m, by_degree) - monos.begin());
        };
        mono_a.assign(n_mono, 0); mono_b.assign(n_mono, 0); mono_c.assign(n_mono, 0); mono_nu.assign(n_mono, 0);
        mono_parent.assign(n_mono, -1); mono_axis.assign(n_mono, -1); mono_lower.assign(3 * size_t(n_mono), -1);
        for (int q = 0; q < n_mono; ++q) {
            const auto& m = monos[q];
            mono_a[q] = m[0]; mono_b[q] = m[1]; mono_c[q] = m[2]; mono_nu[q] = m[0] + m[1] + m[2];
            for (int ax = 0; ax < 3; ++ax)
                if (m[ax] > 0) {
                    auto l = m; --l[ax];
                    mono_lower[3 * q + ax] = index_of(l);
                    if (mono_parent[q] < 0) { mono_parent[q] = mono_lower[3 * q + ax]; mono_axis[q] = ax; }
                }
        }
        for (int k = 0; k < n_basic; ++k)
            basic_mono[k] = index_of({basic[4 * k + 1], basic[4 * k + 2], basic[4 * k + 3]});
        qk_start.assign(n_mono + 1, 0);
        for (int k = 0; k < n_basic; ++k) ++qk_start[basic_mono[k] + 1];
        for (int q = 0; q < n_mono; ++q) qk_start[q + 1] += qk_start[q];
        qk.assign(n_basic, 0);
        {
            std::vector<int> fill(qk_start.begin(), qk_start.end() - 1);
            for (int k = 0; k < n_basic; ++k) qk[fill[basic_mono[k]]++] = k;
        }
        tree.assign(n_times, Times{0, 0, 0, 0.0});
        // Entries run in file order (as in MLIP-2): a moment may be read only once every write to it has happened.
        // The reverse sweeps rely on that order, so it is checked here.
        std::vector<int> last_write(n_moments, -1);
        for (int t = 0; t < n_times; ++t) {
            int k = times[4 * t + 3];
            if (k >= 0 && k < n_moments) last_write[k] = t;
        }
        for (int t = 0; t < n_times; ++t) {
            int i = times[4 * t], j = times[4 * t + 1], mult = times[4 * t + 2], k = times[4 * t + 3];
            if (i < 0 || j < 0 || k < 0 || i >= n_moments || j >= n_moments || k >= n_moments)
                throw std::invalid_argument("alpha_index_times entry " + std::to_string(t) + " is out of range");
            if (k < n_basic || last_write[i] >= t || last_write[j] >= t)
                throw std::invalid_argument("alpha_index_times entry " + std::to_string(t) +
                                            " writes a basic moment or uses a moment before it is complete");
            tree[t] = {i, j, k, double(mult)};
        }
        written.assign(n_moments, 0);
        for (const auto& e : tree) written[e.k] = 1;
        t_first.assign(n_times, 0);
        {
            std::vector<char> seen(n_moments, 0);
            for (int t = 0; t < n_times; ++t)
                if (!seen[tree[t].k]) { seen[tree[t].k] = 1; t_first[t] = 1; }
        }
        mapping.assign(map, map + nmap);
        for (int a = 0; a < nmap; ++a)
            if (mapping[a] < 0 || mapping[a] >= n_moments)
                throw std::invalid_argument("alpha_moment_mapping entry out of range");
    }
};

// ------------------------------------------------------------------------------------------------------------
// Neighbour lists: CSR over central atoms, full lists (every ordered pair i -> image of j within the cutoff)
// ------------------------------------------------------------------------------------------------------------
struct NeighborList {
    int n_atoms = 0;
    std::vector<int> start;      // n_atoms + 1
    std::vector<int> jatom;      // per pair
    std::vector<int> shift;      // per pair: 3 integer image indices (cell rows)
    std::vector<double> vec;     // per pair: r_j + shift . cell - r_i
    double min_distance = INFINITY;
    int n_pairs() const { return int(jatom.size()); }
};

inline double det3(const double* c) {
    return c[0] * (c[4] * c[8] - c[5] * c[7]) - c[1] * (c[3] * c[8] - c[5] * c[6]) + c[2] * (c[3] * c[7] - c[4] * c[6]);
}

// Image ranges needed along each cell row so that all neighbours within rc are found: the spacing of the lattice
// planes spanned by the other two rows is V / |b x c|; cells thinner than rc need several images (small cells).
// The cross product of the two cell rows other than d (row d+1 x row d+2): the normal of the planes they span.
inline void cross_of_other_rows(const double* cell, int d, double* out) {
    const double* u = cell + 3 * ((d + 1) % 3);
    const double* v = cell + 3 * ((d + 2) % 3);
    out[0] = u[1] * v[2] - u[2] * v[1];
    out[1] = u[2] * v[0] - u[0] * v[2];
    out[2] = u[0] * v[1] - u[1] * v[0];
}

inline void image_ranges(const double* cell, const bool* pbc, double rc, int* nimg) {
    double V = std::fabs(det3(cell));
    for (int d = 0; d < 3; ++d) {
        nimg[d] = 0;
        if (!pbc[d]) continue;
        double x[3];
        cross_of_other_rows(cell, d, x);
        double area = std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
        if (!(V > 1e-12) || !(area > 0)) throw std::invalid_argument("a periodic direction has a degenerate cell");
        double h = V / area;
        nimg[d] = int(std::ceil(rc / h));
        if (nimg[d] > 1000) throw std::invalid_argument("cell is far thinner than the cutoff");
    }
}

// Binned search over images: O(N) for large cells, correct for triclinic cells and cells smaller than rc.
// The search runs on positions wrapped into the cell along periodic directions: the image range from
// image_ranges() covers every neighbour only for atoms inside the cell, and MD snapshots (ASE does not wrap) hold
// atoms one or more cells outside it. Shifts and vectors are returned for the positions as given:
// vec = r_j + shift . cell - r_i. Pairs of an atom with its own zero-shift image are excluded.
inline void build_neighbors(int n, const double* pos_in, const double* cell, const bool* pbc, double rc,
                            NeighborList& nl) {
    nl.n_atoms = n;
    nl.start.assign(n + 1, 0);
    nl.jatom.clear(); nl.shift.clear(); nl.vec.clear();
    nl.min_distance = INFINITY;
    if (n == 0) return;
    int nimg[3];
    image_ranges(cell, pbc, rc, nimg);
    for (int k = 0; k < 3 * n; ++k)
        if (!std::isfinite(pos_in[k])) throw std::invalid_argument("non-finite atomic positions");
    // wrapped positions w_i = r_i - o_i . cell, o_i the integer cell offsets along periodic rows
    std::vector<double> wpos(pos_in, pos_in + 3 * size_t(n));
    std::vector<int> off(3 * size_t(n), 0);
    if (pbc[0] || pbc[1] || pbc[2]) {
        const double V = det3(cell);  // image_ranges() has checked that it is non-zero for a periodic cell
        double recip[9];              // rows: (b x c, c x a, a x b) / V, so frac_d = r . recip_d
        for (int d = 0; d < 3; ++d) {
            cross_of_other_rows(cell, d, recip + 3 * d);
            for (int c = 0; c < 3; ++c) recip[3 * d + c] /= V;
        }
        for (int i = 0; i < n; ++i) {
            const double* r = pos_in + 3 * i;
            for (int d = 0; d < 3; ++d) {
                if (!pbc[d]) continue;
                double f = r[0] * recip[3 * d] + r[1] * recip[3 * d + 1] + r[2] * recip[3 * d + 2];
                int o = int(std::floor(f));
                if (o == 0) continue;
                off[3 * i + d] = o;
                for (int c = 0; c < 3; ++c) wpos[3 * i + c] -= o * cell[3 * d + c];
            }
        }
    }
    const double* pos = wpos.data();
    double lo[3], hi[3];
    for (int d = 0; d < 3; ++d) { lo[d] = INFINITY; hi[d] = -INFINITY; }
    for (int i = 0; i < n; ++i)
        for (int d = 0; d < 3; ++d) {
            double x = pos[3 * i + d];
            lo[d] = std::min(lo[d], x); hi[d] = std::max(hi[d], x);
        }
    // candidate images within rc of the atoms' bounding box
    struct Img { double x, y, z; int j, s0, s1, s2; };
    std::vector<Img> imgs;
    imgs.reserve(size_t(n) * (2 * nimg[0] + 1) * (2 * nimg[1] + 1) * (2 * nimg[2] + 1) / 2 + 16);
    for (int s0 = -nimg[0]; s0 <= nimg[0]; ++s0)
        for (int s1 = -nimg[1]; s1 <= nimg[1]; ++s1)
            for (int s2 = -nimg[2]; s2 <= nimg[2]; ++s2) {
                double sx = s0 * cell[0] + s1 * cell[3] + s2 * cell[6];
                double sy = s0 * cell[1] + s1 * cell[4] + s2 * cell[7];
                double sz = s0 * cell[2] + s1 * cell[5] + s2 * cell[8];
                for (int j = 0; j < n; ++j) {
                    double x = pos[3 * j] + sx, y = pos[3 * j + 1] + sy, z = pos[3 * j + 2] + sz;
                    if (x < lo[0] - rc || x > hi[0] + rc || y < lo[1] - rc || y > hi[1] + rc || z < lo[2] - rc ||
                        z > hi[2] + rc)
                        continue;
                    imgs.push_back({x, y, z, j, s0, s1, s2});
                }
            }
    // bins of edge >= rc over the padded box
    int nb[3];
    double bw[3], org[3];
    long total = 1;
    for (int d = 0; d < 3; ++d) {
        org[d] = lo[d] - rc;
        double len = hi[d] - lo[d] + 2 * rc;
        nb[d] = std::max(1, int(len / rc));
        while (total * nb[d] > 4000000L && nb[d] > 1) nb[d] /= 2;
        total *= nb[d];
        bw[d] = len / nb[d];
    }
    auto bin_of = [&](double x, double y, double z, int* b) {
        double c[3] = {x, y, z};
        for (int d = 0; d < 3; ++d) {
            int k = int((c[d] - org[d]) / bw[d]);
            b[d] = std::min(std::max(k, 0), nb[d] - 1);
        }
    };
    std::vector<int> head(size_t(total), -1), next(imgs.size(), -1);
    // insert in reverse so that each bin lists its images in increasing order (deterministic neighbour order)
    for (long k = long(imgs.size()) - 1; k >= 0; --k) {
        int b[3];
        bin_of(imgs[k].x, imgs[k].y, imgs[k].z, b);
        long id = (long(b[0]) * nb[1] + b[1]) * nb[2] + b[2];
        next[k] = head[id];
        head[id] = int(k);
    }
    const double rc2 = rc * rc;
    for (int i = 0; i < n; ++i) {
        double xi = pos[3 * i], yi = pos[3 * i + 1], zi = pos[3 * i + 2];
        int b[3];
        bin_of(xi, yi, zi, b);
        for (int d0 = std::max(0, b[0] - 1); d0 <= std::min(nb[0] - 1, b[0] + 1); ++d0)
            for (int d1 = std::max(0, b[1] - 1); d1 <= std::min(nb[1] - 1, b[1] + 1); ++d1)
                for (int d2 = std::max(0, b[2] - 1); d2 <= std::min(nb[2] - 1, b[2] + 1); ++d2) {
                    long id = (long(d0) * nb[1] + d1) * nb[2] + d2;
                    for (int k = head[id]; k >= 0; k = next[k]) {
                        const Img& im = imgs[k];
                        if (im.j == i && im.s0 == 0 && im.s1 == 0 && im.s2 == 0) continue;
                        double dx = im.x - xi, dy = im.y - yi, dz = im.z - zi;
                        double r2 = dx * dx + dy * dy + dz * dz;
                        if (r2 >= rc2) continue;
                        // the shift for the positions as given: w_j + s.C - w_i = r_j + (s + o_i - o_j).C - r_i
                        const int* oi = &off[3 * size_t(i)];
                        const int* oj = &off[3 * size_t(im.j)];
                        const int s0 = im.s0 + oi[0] - oj[0], s1 = im.s1 + oi[1] - oj[1], s2 = im.s2 + oi[2] - oj[2];
                        nl.jatom.push_back(im.j);
                        nl.shift.push_back(s0); nl.shift.push_back(s1); nl.shift.push_back(s2);
                        for (int c = 0; c < 3; ++c)
                            nl.vec.push_back(pos_in[3 * im.j + c] + s0 * cell[c] + s1 * cell[3 + c] + s2 * cell[6 + c]
                                             - pos_in[3 * i + c]);
                        nl.min_distance = std::min(nl.min_distance, std::sqrt(r2));
                    }
                }
        nl.start[i + 1] = int(nl.jatom.size());
    }
}

// ------------------------------------------------------------------------------------------------------------
// Per-thread workspace (grows, never shrinks). Neighbour quantities are stored structure-of-arrays, [row][n] with
// row stride `cap`, so the inner loops run over neighbours and vectorise.
// ------------------------------------------------------------------------------------------------------------
struct Work {
    int cap = 0;
    std::vector<double> d, inv, ux, uy, uz, s, dx, dy, dz;  // [cap]
    std::vector<double> T, dT, Q, dQ;                        // [n_rb][cap]: Chebyshev, basis with cutoff
    std::vector<double> f, df, X, Y;                         // [n_mu][cap]
    std::vector<double> g, h;                                // [n_mono][cap]: monomials, training tangents
    std::vector<double> zero;                                // [cap] zeros: the "lower monomial" of a zero power
    std::vector<double> S, Sp, rad, ax, ay, az;              // [cap] scratch
    std::vector<double> m, ab, t, bb;                        // [n_moments]: moments, dV/dm, tangents, 2nd adjoints
    std::vector<double> mbar;                                // [n_basic]
    std::vector<int> tstart;                                 // [n_species + 1]: neighbour range of each type
    std::vector<double> G;                                   // [n_moments][3][nn] (LLS design only)
    const Basis* basis = nullptr;

    void reserve(const Basis& B, int nn) {
        if (basis != &B || m.size() != size_t(B.n_moments)) {
            basis = &B;
            m.assign(B.n_moments, 0); ab.assign(B.n_moments, 0); t.assign(B.n_moments, 0); bb.assign(B.n_moments, 0);
            mbar.assign(std::max(B.n_basic, 1), 0);
            tstart.assign(B.n_species + 1, 0);
            cap = 0;
        }
        if (nn <= cap) return;
        cap = std::max(nn, cap * 3 / 2 + 8);
        cap = (cap + 7) & ~7;
        const size_t c = size_t(cap);
        for (auto* v : {&d, &inv, &ux, &uy, &uz, &s, &dx, &dy, &dz, &S, &Sp, &rad, &ax, &ay, &az, &zero})
            v->assign(c, 0.0);
        for (auto* v : {&T, &dT, &Q, &dQ}) v->assign(c * B.n_rb, 0.0);
        for (auto* v : {&f, &df, &X, &Y}) v->assign(c * B.n_mu, 0.0);
        for (auto* v : {&g, &h}) v->assign(c * std::max(B.n_mono, 1), 0.0);
    }
    // row of the monomial one power of `axis` below q (zeros if q has no power of it): grad_u g_q = sum_axis
    // power_axis(q) * lower(q, axis) e_axis
    const double* lower(const Basis& B, int q, int axis) const {
        const int l = B.mono_lower[3 * size_t(q) + axis];
        return l < 0 ? zero.data() : g.data() + size_t(l) * cap;
    }
};

// Hot kernels get an AVX2+FMA clone next to the portable one (chosen at load time), so a wheel built with portable
// flags still runs at full speed on current x86-64 machines.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ALKIT_NO_CLONES)
#define ALKIT_HOT [[maybe_unused]] __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ALKIT_HOT [[maybe_unused]]
#endif
#define ALKIT_PRAGMA(x) _Pragma(#x)
#define ALKIT_SIMD ALKIT_PRAGMA(omp simd)
#define ALKIT_SIMD_SUM(v) ALKIT_PRAGMA(omp simd reduction(+ : v))

// ------------------------------------------------------------------------------------------------------------
// Site kernels. Neighbours of a site must be sorted by type (compact_neighbors does it).
// ------------------------------------------------------------------------------------------------------------
// Geometry of one neighbourhood: distances, unit vectors, radial basis Q_b = scaling T_b(s) (R - r)^2 (and d/dr),
// radial functions f_mu = sum_b c[ti][tj][mu][b] Q_b, and the monomials of the unit vector.
ALKIT_HOT static void site_geometry(const Basis& B, const double* theta, int ti, int nn, const double* rv,
                                    const int* tj, Work& w) {
    const int cap = w.cap, nrb = B.n_rb, nmu = B.n_mu, nmono = B.n_mono;
    const double span = B.rmax - B.rmin, ds = 2.0 / span, rsum = B.rmin + B.rmax, R = B.rmax, sc = B.scaling;
    double* __restrict d = w.d.data();
    double* __restrict inv = w.inv.data();
    double* __restrict ux = w.ux.data();
    double* __restrict uy = w.uy.data();
    double* __restrict uz = w.uz.data();
    ALKIT_SIMD
    for (int n = 0; n < nn; ++n) {
        double x = rv[3 * n], y = rv[3 * n + 1], z = rv[3 * n + 2];
        double r = std::sqrt(x * x + y * y + z * z);
        double iv = 1.0 / r;
        d[n] = r; inv[n] = iv; ux[n] = x * iv; uy[n] = y * iv; uz[n] = z * iv;
    }
    // type ranges
    int* ts = w.tstart.data();
    {
        int t = 0;
        ts[0] = 0;
        for (int n = 0; n < nn; ++n)
            while (t < tj[n]) ts[++t] = n;
        while (t < B.n_species) ts[++t] = nn;
    }
    // Chebyshev polynomials T_b(s(r)) and dT_b/dr, times the smooth cutoff scaling (R - r)^2
    double* __restrict T = w.T.data();
    double* __restrict dT = w.dT.data();
    double* __restrict Q = w.Q.data();
    double* __restrict dQ = w.dQ.data();
    double* __restrict sm = w.S.data();
    double* __restrict dsm = w.Sp.data();
    ALKIT_SIMD
    for (int n = 0; n < nn; ++n) {
        double diff = R - d[n];
        bool in = diff > 0;
        sm[n] = in ? sc * diff * diff : 0.0;
        dsm[n] = in ? -2.0 * sc * diff : 0.0;
        T[n] = 1.0; dT[n] = 0.0;
        if (nrb > 1) { T[cap + n] = (2.0 * d[n] - rsum) / span; dT[cap + n] = ds; }
    }
    for (int b = 2; b < nrb; ++b) {
        const double* T1 = T + (b - 1) * cap; const double* T0 = T + (b - 2) * cap;
        const double* dT1 = dT + (b - 1) * cap; const double* dT0 = dT + (b - 2) * cap;
        double* T2 = T + b * cap; double* dT2 = dT + b * cap;
        const double* sv = T + cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) {
            T2[n] = 2.0 * sv[n] * T1[n] - T0[n];
            dT2[n] = 2.0 * ds * T1[n] + 2.0 * sv[n] * dT1[n] - dT0[n];
        }
    }
    for (int b = 0; b < nrb; ++b) {
        const double* Tb = T + b * cap; const double* dTb = dT + b * cap;
        double* Qb = Q + b * cap; double* dQb = dQ + b * cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) { Qb[n] = Tb[n] * sm[n]; dQb[n] = dTb[n] * sm[n] + Tb[n] * dsm[n]; }
    }
    // radial functions, one neighbour type at a time
    double* __restrict f = w.f.data();
    double* __restrict df = w.df.data();
    for (int mu = 0; mu < nmu; ++mu) {
        double* fm = f + mu * cap; double* dfm = df + mu * cap;
        for (int n = 0; n < nn; ++n) { fm[n] = 0.0; dfm[n] = 0.0; }
    }
    for (int t = 0; t < B.n_species; ++t) {
        const int n0 = ts[t], n1 = ts[t + 1];
        if (n0 == n1) continue;
        const double* c = theta + B.off_radial() + size_t(ti * B.n_species + t) * nmu * nrb;
        for (int mu = 0; mu < nmu; ++mu) {
            double* fm = f + mu * cap; double* dfm = df + mu * cap;
            for (int b = 0; b < nrb; ++b) {
                const double cb = c[mu * nrb + b];
                const double* Qb = Q + b * cap; const double* dQb = dQ + b * cap;
                ALKIT_SIMD
                for (int n = n0; n < n1; ++n) { fm[n] += cb * Qb[n]; dfm[n] += cb * dQb[n]; }
            }
        }
    }
    // monomials of the unit vector, each its parent times one component (ordered by degree; q = 0 is 1)
    if (nmono > 0) {
        double* g0 = w.g.data();
        for (int n = 0; n < nn; ++n) g0[n] = 1.0;
    }
    const double* axes[3] = {ux, uy, uz};
    for (int q = 1; q < nmono; ++q) {
        const double* __restrict gp = w.g.data() + size_t(B.mono_parent[q]) * cap;
        const double* __restrict u = axes[B.mono_axis[q]];
        double* __restrict gq = w.g.data() + size_t(q) * cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) gq[n] = gp[n] * u[n];
    }
}

// Moments of the site (basic ones from the neighbourhood, the rest by the product tree); returns the site energy.
ALKIT_HOT static double site_moments(const Basis& B, const double* theta, int ti, int nn, Work& w) {
    double* m = w.m.data();
    const int cap = w.cap;
    for (int k = 0; k < B.n_basic; ++k) {
        const double* fm = w.f.data() + B.basic_mu[k] * cap;
        const double* gq = w.g.data() + B.basic_mono[k] * cap;
        double acc = 0.0;
        ALKIT_SIMD_SUM(acc)
        for (int n = 0; n < nn; ++n) acc += fm[n] * gq[n];
        m[k] = acc;
    }
    for (int k = B.n_basic; k < B.n_moments; ++k) m[k] = 0.0;
    for (const auto& e : B.tree) m[e.k] += e.mult * m[e.i] * m[e.j];
    double V = theta[B.off_species() + ti];
    for (int a = 0; a < B.n_scalar; ++a) V += theta[a] * m[B.mapping[a]];
    return V;
}

// ab = dV/dm for every moment (reverse sweep of the product tree).
[[maybe_unused]] static inline void site_adjoint(const Basis& B, const double* theta, Work& w) {
    double* ab = w.ab.data();
    const double* m = w.m.data();
    std::fill(ab, ab + B.n_moments, 0.0);
    for (int a = 0; a < B.n_scalar; ++a) ab[B.mapping[a]] += theta[a];
    for (int t = B.n_times - 1; t >= 0; --t) {  // no test for gk == 0 (rare): the sweep stays branch-free
        const auto& e = B.tree[t];
        const double gk = e.mult * ab[e.k];
        ab[e.i] += gk * m[e.j];
        ab[e.j] += gk * m[e.i];
    }
}

// dV/dr for every neighbour (3 per neighbour into out): d(f g)/dr = u (f' g - nu f g / r) + (f / r) grad_u g.
ALKIT_HOT static void site_forces(const Basis& B, int nn, Work& w, double* out) {
    const int cap = w.cap;
    const double* ab = w.ab.data();
    double* __restrict S = w.S.data();
    double* __restrict Sp = w.Sp.data();
    double* __restrict rad = w.rad.data();
    double* __restrict ax = w.ax.data();
    double* __restrict ay = w.ay.data();
    double* __restrict az = w.az.data();
    const double* __restrict inv = w.inv.data();
    for (int n = 0; n < nn; ++n) { rad[n] = 0; ax[n] = 0; ay[n] = 0; az[n] = 0; }
    for (int q = 0; q < B.n_mono; ++q) {
        const int k0 = B.qk_start[q], k1 = B.qk_start[q + 1];
        bool any = false;
        for (int e = k0; e < k1; ++e) any |= ab[B.qk[e]] != 0.0;
        if (!any) continue;
        const double nu = B.mono_nu[q], pa = B.mono_a[q], pb = B.mono_b[q], pc = B.mono_c[q];
        const double* __restrict gq = w.g.data() + size_t(q) * cap;
        const double* __restrict gxq = w.lower(B, q, 0);
        const double* __restrict gyq = w.lower(B, q, 1);
        const double* __restrict gzq = w.lower(B, q, 2);
        if (k1 - k0 == 1) {  // most monomials carry one basic moment: no S arrays
            const int k = B.qk[k0];
            const double a = ab[k];
            const double* __restrict fm = w.f.data() + size_t(B.basic_mu[k]) * cap;
            const double* __restrict dfm = w.df.data() + size_t(B.basic_mu[k]) * cap;
            ALKIT_SIMD
            for (int n = 0; n < nn; ++n) {
                const double sv = a * fm[n];
                rad[n] += (a * dfm[n] - nu * sv * inv[n]) * gq[n];
                ax[n] += pa * sv * gxq[n]; ay[n] += pb * sv * gyq[n]; az[n] += pc * sv * gzq[n];
            }
            continue;
        }
        for (int e = k0; e < k1; ++e) {
            const int k = B.qk[e];
            const double a = ab[k];
            const double* __restrict fm = w.f.data() + size_t(B.basic_mu[k]) * cap;
            const double* __restrict dfm = w.df.data() + size_t(B.basic_mu[k]) * cap;
            if (e == k0) {
                ALKIT_SIMD
                for (int n = 0; n < nn; ++n) { S[n] = a * fm[n]; Sp[n] = a * dfm[n]; }
            } else {
                ALKIT_SIMD
                for (int n = 0; n < nn; ++n) { S[n] += a * fm[n]; Sp[n] += a * dfm[n]; }
            }
        }
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) {
            rad[n] += (Sp[n] - nu * S[n] * inv[n]) * gq[n];
            ax[n] += pa * S[n] * gxq[n]; ay[n] += pb * S[n] * gyq[n]; az[n] += pc * S[n] * gzq[n];
        }
    }
    for (int n = 0; n < nn; ++n) {
        out[3 * n] = w.ux[n] * rad[n] + ax[n] * inv[n];
        out[3 * n + 1] = w.uy[n] * rad[n] + ay[n] * inv[n];
        out[3 * n + 2] = w.uz[n] * rad[n] + az[n] * inv[n];
    }
}

// out[tj][mu][b] += dV/dc[ti][tj][mu][b] (this site's type row; n_species * n_mu * n_rb entries).
ALKIT_HOT static void site_radial_jacobian(const Basis& B, int nn, Work& w, double* out) {
    const int cap = w.cap, nmu = B.n_mu, nrb = B.n_rb;
    const double* ab = w.ab.data();
    double* __restrict X = w.X.data();
    for (int i = 0; i < nmu * cap; ++i) X[i] = 0.0;
    for (int k = 0; k < B.n_basic; ++k) {
        const double a = ab[k];
        if (a == 0.0) continue;
        double* Xm = X + B.basic_mu[k] * cap;
        const double* gq = w.g.data() + B.basic_mono[k] * cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) Xm[n] += a * gq[n];
    }
    const int* ts = w.tstart.data();
    for (int t = 0; t < B.n_species; ++t) {
        const int n0 = ts[t], n1 = ts[t + 1];
        if (n0 == n1) continue;
        double* o = out + size_t(t) * nmu * nrb;
        for (int mu = 0; mu < nmu; ++mu)
            for (int b = 0; b < nrb; ++b) {
                const double* Xm = X + mu * cap; const double* Qb = w.Q.data() + b * cap;
                double acc = 0.0;
                ALKIT_SIMD_SUM(acc)
                for (int n = n0; n < n1; ++n) acc += Xm[n] * Qb[n];
                o[mu * nrb + b] += acc;
            }
    }
}

// Training pass of one site: with lambda = dLoss/dV_i (the same for all sites of a configuration) and per-neighbour
// tangent directions delta (3 per neighbour), accumulate d/dtheta [lambda V_i + sum_n dV_i/dr_n . delta_n] into grad.
// Requires site_geometry, site_moments and site_adjoint of this site in w.
ALKIT_HOT static void site_train(const Basis& B, int ti, int nn, const double* delta, double lambda, Work& w,
                                 double* grad) {
    const int cap = w.cap, nmu = B.n_mu, nrb = B.n_rb;
    const double* m = w.m.data();
    const double* ab = w.ab.data();
    double* t = w.t.data();
    double* bb = w.bb.data();
    double* __restrict s = w.s.data();
    double* __restrict dx = w.dx.data();
    double* __restrict dy = w.dy.data();
    double* __restrict dz = w.dz.data();
    const double* __restrict inv = w.inv.data();
    for (int n = 0; n < nn; ++n) {
        dx[n] = delta[3 * n]; dy[n] = delta[3 * n + 1]; dz[n] = delta[3 * n + 2];
        s[n] = w.ux[n] * dx[n] + w.uy[n] * dy[n] + w.uz[n] * dz[n];
    }
    // h_q = (grad_u g_q . delta - nu_q g_q s) / r, and the tangents of the basic moments
    for (int q = 0; q < B.n_mono; ++q) {
        const double nu = B.mono_nu[q], pa = B.mono_a[q], pb = B.mono_b[q], pc = B.mono_c[q];
        const double* gq = w.g.data() + q * cap;
        const double* gxq = w.lower(B, q, 0);
        const double* gyq = w.lower(B, q, 1);
        const double* gzq = w.lower(B, q, 2);
        double* __restrict hq = w.h.data() + q * cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n)
            hq[n] = (pa * gxq[n] * dx[n] + pb * gyq[n] * dy[n] + pc * gzq[n] * dz[n] - nu * gq[n] * s[n]) * inv[n];
        for (int e = B.qk_start[q]; e < B.qk_start[q + 1]; ++e) {
            const int k = B.qk[e];
            const double* fm = w.f.data() + B.basic_mu[k] * cap;
            const double* dfm = w.df.data() + B.basic_mu[k] * cap;
            double acc = 0.0;
            ALKIT_SIMD_SUM(acc)
            for (int n = 0; n < nn; ++n) acc += dfm[n] * gq[n] * s[n] + fm[n] * hq[n];
            t[k] = acc;
        }
    }
    for (int k = B.n_basic; k < B.n_moments; ++k) t[k] = 0.0;
    for (const auto& e : B.tree) t[e.k] += e.mult * (t[e.i] * m[e.j] + m[e.i] * t[e.j]);
    // second-order adjoint bb = d/dm (sum_k ab_k t_k)
    std::fill(bb, bb + B.n_moments, 0.0);
    for (int q = B.n_times - 1; q >= 0; --q) {
        const int i = B.tree[q].i, j = B.tree[q].j, k = B.tree[q].k;
        const double mult = B.tree[q].mult, bk = bb[k], ak = ab[k];
        if (bk == 0.0 && ak == 0.0) continue;
        bb[i] += mult * (bk * m[j] + ak * t[j]);
        bb[j] += mult * (bk * m[i] + ak * t[i]);
    }
    // linear coefficients
    for (int a = 0; a < B.n_scalar; ++a) grad[a] += lambda * m[B.mapping[a]] + t[B.mapping[a]];
    grad[B.off_species() + ti] += lambda;
    // radial coefficients: X_mu = sum_k (mbar_k g + ab_k h), Y_mu = s sum_k ab_k g, mbar = lambda ab + bb
    double* __restrict X = w.X.data();
    double* __restrict Y = w.Y.data();
    for (int i = 0; i < nmu * cap; ++i) { X[i] = 0.0; Y[i] = 0.0; }
    for (int k = 0; k < B.n_basic; ++k) {
        const double mb = lambda * ab[k] + bb[k], a = ab[k];
        if (mb == 0.0 && a == 0.0) continue;
        const int q = B.basic_mono[k];
        const double* gq = w.g.data() + q * cap;
        const double* hq = w.h.data() + q * cap;
        double* Xm = X + B.basic_mu[k] * cap;
        double* Ym = Y + B.basic_mu[k] * cap;
        ALKIT_SIMD
        for (int n = 0; n < nn; ++n) { Xm[n] += mb * gq[n] + a * hq[n]; Ym[n] += a * gq[n]; }
    }
    const int* ts = w.tstart.data();
    for (int tt = 0; tt < B.n_species; ++tt) {
        const int n0 = ts[tt], n1 = ts[tt + 1];
        if (n0 == n1) continue;
        double* o = grad + B.radial_index(ti, tt, 0, 0);
        for (int mu = 0; mu < nmu; ++mu) {
            const double* Xm = X + mu * cap; const double* Ym = Y + mu * cap;
            for (int b = 0; b < nrb; ++b) {
                const double* Qb = w.Q.data() + b * cap; const double* dQb = w.dQ.data() + b * cap;
                double acc = 0.0;
                ALKIT_SIMD_SUM(acc)
                for (int n = n0; n < n1; ++n) acc += Xm[n] * Qb[n] + Ym[n] * s[n] * dQb[n];
                o[mu * nrb + b] += acc;
            }
        }
    }
}

// Position derivatives of every moment w.r.t. the neighbour vectors n0..n1-1 (forward mode through the product
// tree), for the LLS design matrix: w.G[(k * 3 + c) * nb + (n - n0)] = d m_k / d r_n,c with nb = n1 - n0. Callers
// go through a site in blocks of a few neighbours so that the n_moments x 3 x nb array stays in cache (the tree
// sweep is memory-bound otherwise). Requires site_geometry and site_moments.
ALKIT_HOT static void site_moment_gradients(const Basis& B, int n0, int n1, Work& w) {
    const int cap = w.cap, nb = n1 - n0;
    const size_t stride = size_t(3) * nb;
    const size_t need = size_t(B.n_moments) * stride;
    if (w.G.size() < need) w.G.resize(need);
    double* G = w.G.data();
    const double* m = w.m.data();
    const double* __restrict inv = w.inv.data() + n0;
    const double* __restrict ux = w.ux.data() + n0;
    const double* __restrict uy = w.uy.data() + n0;
    const double* __restrict uz = w.uz.data() + n0;
    for (int k = 0; k < B.n_basic; ++k) {
        const int q = B.basic_mono[k], mu = B.basic_mu[k];
        const double nu = B.mono_nu[q], pa = B.mono_a[q], pb = B.mono_b[q], pc = B.mono_c[q];
        const double* fm = w.f.data() + mu * cap + n0; const double* dfm = w.df.data() + mu * cap + n0;
        const double* gq = w.g.data() + q * cap + n0;
        const double* gxq = w.lower(B, q, 0) + n0;
        const double* gyq = w.lower(B, q, 1) + n0;
        const double* gzq = w.lower(B, q, 2) + n0;
        double* __restrict o = G + size_t(k) * stride;
        ALKIT_SIMD
        for (int n = 0; n < nb; ++n) {
            double rad = dfm[n] * gq[n] - nu * fm[n] * gq[n] * inv[n];
            double fi = fm[n] * inv[n];
            o[n] = ux[n] * rad + fi * pa * gxq[n];
            o[nb + n] = uy[n] * rad + fi * pb * gyq[n];
            o[2 * nb + n] = uz[n] * rad + fi * pc * gzq[n];
        }
    }
    // non-basic rows are written first by their first tree entry (no zero fill); moments the tree never writes
    // (none in MLIP-2's or alkit's files) are zeroed
    for (int k = B.n_basic; k < B.n_moments; ++k)
        if (B.unwritten(k)) std::fill(G + size_t(k) * stride, G + size_t(k + 1) * stride, 0.0);
    for (int q = 0; q < B.n_times; ++q) {
        const int i = B.tree[q].i, j = B.tree[q].j, k = B.tree[q].k;
        const double mult = B.tree[q].mult, mi = mult * m[i], mj = mult * m[j];
        double* __restrict Gk = G + size_t(k) * stride;
        const double* Gi = G + size_t(i) * stride;
        const double* Gj = G + size_t(j) * stride;
        if (B.t_first[q]) {
            ALKIT_SIMD
            for (size_t c = 0; c < stride; ++c) Gk[c] = Gi[c] * mj + mi * Gj[c];
        } else {
            ALKIT_SIMD
            for (size_t c = 0; c < stride; ++c) Gk[c] += Gi[c] * mj + mi * Gj[c];
        }
    }
}

// MaxVol grades of n rows at once: gamma_r = max_k |(R_r . A^-1)_k|. R is n x ld and inv p x ld, both row-major with
// ld a multiple of 8 and inv's columns past p zero. Why blocked: one row at a time streams all of A^-1 (p^2 doubles,
// 0.5 MB with all coefficients at level 16) from L2 per atom; here 4 rows share each load of an 8-column strip and
// keep their 4 x 8 partial products in registers, and A^-1 is read once per 64 rows.
ALKIT_HOT static void rows_grade(const double* R, int n, int ld, const double* inv, int p, double* gamma) {
    // GCC vector types (lowered to SSE2 in the portable clone); aligned(8): loads need not be 32-byte aligned
    typedef double v4d __attribute__((vector_size(32), aligned(8)));
    constexpr int RB = 4, CHUNK = 64;
    auto vmax_abs = [](double g, v4d v) {
        for (int c = 0; c < 4; ++c) g = std::max(g, std::fabs(v[c]));
        return g;
    };
    for (int r = 0; r < n; ++r) gamma[r] = 0.0;
    for (int r0 = 0; r0 < n; r0 += CHUNK) {
        const int r1 = std::min(n, r0 + CHUNK);
        for (int k0 = 0; k0 < ld; k0 += 8) {
            for (int a0 = r0; a0 < r1; a0 += RB) {
                const int na = std::min(RB, r1 - a0);
                const double* R0 = R + size_t(a0) * ld;
                const double* R1 = R + size_t(a0 + std::min(1, na - 1)) * ld;
                const double* R2 = R + size_t(a0 + std::min(2, na - 1)) * ld;
                const double* R3 = R + size_t(a0 + std::min(3, na - 1)) * ld;
                v4d c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {};
                for (int l = 0; l < p; ++l) {
                    const v4d i0 = *reinterpret_cast<const v4d*>(inv + size_t(l) * ld + k0);
                    const v4d i1 = *reinterpret_cast<const v4d*>(inv + size_t(l) * ld + k0 + 4);
                    const double x0 = R0[l], x1 = R1[l], x2 = R2[l], x3 = R3[l];
                    c00 += x0 * i0; c01 += x0 * i1; c10 += x1 * i0; c11 += x1 * i1;
                    c20 += x2 * i0; c21 += x2 * i1; c30 += x3 * i0; c31 += x3 * i1;
                }
                const v4d lo[RB] = {c00, c10, c20, c30}, hi[RB] = {c01, c11, c21, c31};
                for (int a = 0; a < na; ++a) gamma[a0 + a] = vmax_abs(vmax_abs(gamma[a0 + a], lo[a]), hi[a]);
            }
        }
    }
}

// Upper triangle of K += c * A A' for the rows of A (n_rows x len, row-major) and h += c * A y.
ALKIT_HOT static void add_gram(int n_rows, int len, const double* A, const double* y, double c, double* K, int ldk,
                               double* h, double sign) {
    for (int a = 0; a < n_rows; ++a) {
        const double* ra = A + size_t(a) * len;
        double* Ka = K + size_t(a) * ldk;
        for (int b = a; b < n_rows; ++b) {
            const double* rb = A + size_t(b) * len;
            double acc = 0.0;
            ALKIT_SIMD_SUM(acc)
            for (int r = 0; r < len; ++r) acc += ra[r] * rb[r];
            Ka[b] += c * acc;
        }
        double acc = 0.0;
        ALKIT_SIMD_SUM(acc)
        for (int r = 0; r < len; ++r) acc += ra[r] * y[r];
        h[a] += sign * c * acc;
    }
}

// ------------------------------------------------------------------------------------------------------------
// Parallel loop with a dynamic schedule; results must go to per-item slots (determinism).
// ------------------------------------------------------------------------------------------------------------
template <class F>
inline void parallel_for(int n_items, int n_threads, F&& body) {
    n_threads = std::max(1, std::min(n_threads, n_items));
    if (n_threads == 1) {
        for (int i = 0; i < n_items; ++i) body(0, i);
        return;
    }
    std::atomic<int> next(0);
    std::vector<std::thread> pool;
    std::exception_ptr err = nullptr;
    std::atomic<bool> failed(false);
    auto worker = [&](int tid) {
        try {
            for (;;) {
                int i = next.fetch_add(1);
                if (i >= n_items || failed.load()) break;
                body(tid, i);
            }
        } catch (...) {
            if (!failed.exchange(true)) err = std::current_exception();
        }
    };
    for (int t = 1; t < n_threads; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& th : pool) th.join();
    if (err) std::rethrow_exception(err);
}

}  // namespace alkit
