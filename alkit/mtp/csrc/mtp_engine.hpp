// Structure-level drivers of the MTP core: evaluation of one structure (MD, grading) and a training set (loss,
// reverse-mode gradient, linear least-squares blocks). See mtp_core.hpp for the site kernels.
#pragma once

#include "mtp_core.hpp"

namespace alkit {

// Compact view of one structure's neighbourhoods within the cutoff (CSR), with neighbour types.
struct Neighborhoods {
    int n_atoms = 0;
    std::vector<int> start, jatom, jtype;
    std::vector<double> vec;
    double min_distance = INFINITY;
    int n_pairs() const { return int(jatom.size()); }
};

// Mode of the per-atom rows for the MaxVol grade.
enum RowMode { ROWS_NONE = 0, ROWS_LINEAR = 1, ROWS_ALL = 2 };

inline int row_width(const Basis& B, int mode) {
    return mode == ROWS_ALL ? B.n_params() : (mode == ROWS_LINEAR ? B.n_linear() : 0);
}

// Evaluate energies, forces, virial and (optionally) per-atom basis rows of one structure. Threads over atoms; the
// per-site outputs are reduced serially in pair order, so the result does not depend on the thread count.
struct Evaluator {
    std::vector<Work> works;
    std::vector<double> pair_grad;  // dV_i/dr_n per pair

    void evaluate(const Basis& B, const double* theta, const Neighborhoods& nb, const int* types, int n_threads,
                  int row_mode, double* energies, double* forces, double* virial, double* rows) {
        const int n = nb.n_atoms;
        n_threads = std::max(1, n_threads);
        if (int(works.size()) < n_threads) works.resize(n_threads);
        pair_grad.resize(size_t(nb.n_pairs()) * 3);
        const int width = row_width(B, row_mode);
        const int chunk = 8;
        const int n_chunks = (n + chunk - 1) / chunk;
        auto body = [&](int tid, int c) {
            Work& w = works[tid];
            for (int i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i) {
                int p0 = nb.start[i], nn = nb.start[i + 1] - p0;
                int ti = types[i];
                w.reserve(B, nn);
                site_geometry(B, theta, ti, nn, &nb.vec[size_t(p0) * 3], &nb.jtype[p0], w);
                energies[i] = site_moments(B, theta, ti, nn, w);
                if (forces || virial || row_mode == ROWS_ALL) site_adjoint(B, theta, w);
                if (forces || virial) site_forces(B, nn, w, &pair_grad[size_t(p0) * 3]);
                if (row_mode != ROWS_NONE) {
                    double* r = rows + size_t(i) * width;
                    std::fill(r, r + width, 0.0);
                    for (int a = 0; a < B.n_scalar; ++a) r[a] = w.m[B.mapping[a]];
                    r[B.off_species() + ti] = 1.0;
                    if (row_mode == ROWS_ALL)
                        site_radial_jacobian(B, nn, w, r + B.radial_index(ti, 0, 0, 0));
                }
            }
        };
        parallel_for(n_chunks, n < 64 ? 1 : n_threads, body);
        if (forces) std::fill(forces, forces + 3 * size_t(n), 0.0);
        if (virial) std::fill(virial, virial + 9, 0.0);
        if (!forces && !virial) return;
        for (int i = 0; i < n; ++i) {
            for (int p = nb.start[i]; p < nb.start[i + 1]; ++p) {
                const double* d = &pair_grad[size_t(p) * 3];
                if (forces) {
                    int j = nb.jatom[p];
                    forces[3 * i] += d[0]; forces[3 * i + 1] += d[1]; forces[3 * i + 2] += d[2];
                    forces[3 * j] -= d[0]; forces[3 * j + 1] -= d[1]; forces[3 * j + 2] -= d[2];
                }
                if (virial) {
                    const double* r = &nb.vec[size_t(p) * 3];
                    for (int a = 0; a < 3; ++a)
                        for (int b = 0; b < 3; ++b) virial[3 * a + b] += r[a] * d[b];
                }
            }
        }
    }
};

// Select the pairs of a (skin-padded) neighbour list that lie within rc for the current positions and cell.
// Neighbours of each atom come out sorted by type (stable), which the site kernels require.
inline void compact_neighbors(const NeighborList& nl, const double* pos, const double* cell, const int* types,
                              double rc, int n_species, Neighborhoods& out) {
    const int n = nl.n_atoms;
    out.n_atoms = n;
    out.start.resize(n + 1);
    out.jatom.clear(); out.jtype.clear(); out.vec.clear();
    out.min_distance = INFINITY;
    const double rc2 = rc * rc;
    out.start[0] = 0;
    for (int i = 0; i < n; ++i) {
        for (int t = 0; t < n_species; ++t) {
            for (int p = nl.start[i]; p < nl.start[i + 1]; ++p) {
                int j = nl.jatom[p];
                if (types[j] != t) continue;
                const int* s = &nl.shift[size_t(p) * 3];
                double v[3];
                for (int c = 0; c < 3; ++c)
                    v[c] = pos[3 * j + c] + s[0] * cell[c] + s[1] * cell[3 + c] + s[2] * cell[6 + c] - pos[3 * i + c];
                double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
                if (r2 >= rc2) continue;
                out.jatom.push_back(j);
                out.jtype.push_back(t);
                out.vec.push_back(v[0]); out.vec.push_back(v[1]); out.vec.push_back(v[2]);
                out.min_distance = std::min(out.min_distance, std::sqrt(r2));
            }
        }
        out.start[i + 1] = int(out.jatom.size());
    }
}

// A structure's evaluator with a persistent Verlet list (cutoff + skin), rebuilt only when an atom or the cell has
// moved far enough that a pair could have crossed the cutoff (the LAMMPS rule: half the skin).
struct StructureCalculator {
    double skin = 1.0;
    NeighborList nl;
    Neighborhoods nb;
    Evaluator ev;
    std::vector<double> ref_pos, ref_cell;
    std::vector<char> ref_pbc;
    std::vector<int> ref_types;
    int nimg_max[3] = {0, 0, 0};
    long n_builds = 0;

    bool needs_rebuild(int n, const double* pos, const double* cell, const bool* pbc, const int* types) const {
        if (int(ref_pos.size()) != 3 * n || nl.n_atoms != n) return true;
        for (int d = 0; d < 3; ++d) if (bool(ref_pbc[d]) != pbc[d]) return true;
        for (int i = 0; i < n; ++i) if (types[i] != ref_types[i]) return true;
        double maxd2 = 0;
        for (int i = 0; i < n; ++i) {
            double dx = pos[3 * i] - ref_pos[3 * i], dy = pos[3 * i + 1] - ref_pos[3 * i + 1],
                   dz = pos[3 * i + 2] - ref_pos[3 * i + 2];
            maxd2 = std::max(maxd2, dx * dx + dy * dy + dz * dz);
        }
        double bound = std::sqrt(maxd2);
        // image displacement from a cell change: shift . dcell, |shift_d| <= nimg_max[d] (+1 for safety)
        for (int d = 0; d < 3; ++d) {
            double dc = 0;
            for (int c = 0; c < 3; ++c) dc += (cell[3 * d + c] - ref_cell[3 * d + c]) * (cell[3 * d + c] - ref_cell[3 * d + c]);
            bound += (nimg_max[d] + 1) * std::sqrt(dc);
        }
        return 2.0 * bound > skin;
    }

    void update(const Basis& B, int n, const double* pos, const double* cell, const bool* pbc, const int* types) {
        if (needs_rebuild(n, pos, cell, pbc, types)) {
            build_neighbors(n, pos, cell, pbc, B.rmax + skin, nl);
            ref_pos.assign(pos, pos + 3 * size_t(n));
            ref_cell.assign(cell, cell + 9);
            ref_pbc.assign(pbc, pbc + 3);
            ref_types.assign(types, types + n);
            for (int d = 0; d < 3; ++d) nimg_max[d] = 0;
            for (int p = 0; p < nl.n_pairs(); ++p)
                for (int d = 0; d < 3; ++d) nimg_max[d] = std::max(nimg_max[d], std::abs(nl.shift[3 * p + d]));
            ++n_builds;
        }
        compact_neighbors(nl, pos, cell, types, B.rmax, B.n_species, nb);
    }
};

// ------------------------------------------------------------------------------------------------------------
// Training set
// ------------------------------------------------------------------------------------------------------------
struct LossParts { double energy = 0, forces = 0, stress = 0; double total() const { return energy + forces + stress; } };

struct TrainingSet {
    // structures (neighbourhoods built once: positions never change during a fit)
    int n_configs = 0;
    std::vector<Neighborhoods> nbs;
    std::vector<int> atom_offset;       // per config, into the concatenated per-atom arrays
    std::vector<int> types;             // concatenated
    std::vector<double> energy;         // target per config
    std::vector<double> forces;         // target, concatenated 3 per atom
    std::vector<double> stress;         // target per config, full 3x3, eV/A^3 (ASE sign)
    std::vector<double> volume;
    std::vector<char> has_forces, has_stress;
    int max_atoms = 0;
    std::vector<std::vector<double>> cache;  // per thread: site moments and adjoints of one configuration
    std::vector<Work> works;
    std::vector<std::vector<double>> scratch;  // per thread: pair grads, forces, deltas

    static constexpr int GRAD_BLOCK = 2;   // configurations per reduction slot (fixed: thread-count independent)
    // The least-squares assembly sums per-block normal matrices (nl x nl each) in block order, so its result depends
    // on the block partition, never on the thread count. Many small blocks let 2+ threads share an active-learning
    // set of tens of configurations evenly (32 per block left a 29-configuration set on one thread); the bound on
    // their memory keeps high levels (nl = 866 at level 24) from allocating a matrix per configuration.
    static constexpr int LLS_MAX_BLOCKS = 64;
    static constexpr size_t LLS_BLOCK_BYTES = size_t(64) << 20;

    int n_atoms_total() const { return int(types.size()); }

    void prepare_threads(int n_threads) {
        if (int(works.size()) < n_threads) { works.resize(n_threads); cache.resize(n_threads); scratch.resize(n_threads); }
    }

    // Forward pass of configuration c: site energies, dV/dr per pair, forces, virial. Keeps m/ab of every site in
    // cache (when keep), so the training pass need not recompute the product tree.
    double forward(const Basis& B, const double* theta, int c, int tid, bool keep, double* F, double* W) {
        const Neighborhoods& nb = nbs[c];
        const int n = nb.n_atoms;
        const int* ty = &types[atom_offset[c]];
        Work& w = works[tid];
        std::vector<double>& pg = scratch[tid];
        size_t need = size_t(nb.n_pairs()) * 6 + 3 * size_t(n);
        if (pg.size() < need) pg.resize(need);
        double* pair_grad = pg.data();
        std::vector<double>& cc = cache[tid];
        if (keep && cc.size() < size_t(n) * 2 * B.n_moments) cc.resize(size_t(n) * 2 * B.n_moments);
        double E = 0;
        for (int i = 0; i < n; ++i) {
            int p0 = nb.start[i], nn = nb.start[i + 1] - p0;
            w.reserve(B, nn);
            site_geometry(B, theta, ty[i], nn, &nb.vec[size_t(p0) * 3], &nb.jtype[p0], w);
            E += site_moments(B, theta, ty[i], nn, w);
            site_adjoint(B, theta, w);
            site_forces(B, nn, w, pair_grad + size_t(p0) * 3);
            if (keep) {
                std::copy(w.m.begin(), w.m.end(), cc.begin() + size_t(i) * 2 * B.n_moments);
                std::copy(w.ab.begin(), w.ab.end(), cc.begin() + size_t(i) * 2 * B.n_moments + B.n_moments);
            }
        }
        std::fill(F, F + 3 * size_t(n), 0.0);
        std::fill(W, W + 9, 0.0);
        for (int i = 0; i < n; ++i)
            for (int p = nb.start[i]; p < nb.start[i + 1]; ++p) {
                const double* d = pair_grad + size_t(p) * 3;
                int j = nb.jatom[p];
                const double* r = &nb.vec[size_t(p) * 3];
                for (int a = 0; a < 3; ++a) {
                    F[3 * i + a] += d[a];
                    F[3 * j + a] -= d[a];
                    for (int b = 0; b < 3; ++b) W[3 * a + b] += r[a] * d[b];
                }
            }
        return E;
    }

    // Loss (motep's normalisation: per configuration, energies per atom, forces per atom, stress times volume per
    // atom) and its gradient over all parameters.
    LossParts loss_grad(const Basis& B, const double* theta, double wE, double wF, double wS, int n_threads,
                        double* grad, bool want_grad) {
        n_threads = std::max(1, n_threads);
        prepare_threads(n_threads);
        const int P = B.n_params();
        const int n_blocks = (n_configs + GRAD_BLOCK - 1) / GRAD_BLOCK;
        std::vector<double> bgrad(want_grad ? size_t(n_blocks) * P : 0, 0.0);
        std::vector<LossParts> bloss(n_blocks);
        const double inv_nc = 1.0 / std::max(1, n_configs);
        std::vector<std::vector<double>> fbuf(n_threads), dbuf(n_threads);
        auto body = [&](int tid, int blk) {
            std::vector<double>& Fv = fbuf[tid];
            std::vector<double>& Dv = dbuf[tid];
            for (int c = blk * GRAD_BLOCK; c < std::min(n_configs, (blk + 1) * GRAD_BLOCK); ++c) {
                const Neighborhoods& nb = nbs[c];
                const int n = nb.n_atoms;
                if (Fv.size() < 3 * size_t(n) + 9) Fv.resize(3 * size_t(n) + 9);
                double* F = Fv.data();
                double* W = F + 3 * n;
                double E = forward(B, theta, c, tid, want_grad, F, W);
                const double N = n;
                double cE = wE * inv_nc / (N * N);
                double dE = E - energy[c];
                LossParts& L = bloss[blk];
                L.energy += cE * dE * dE;
                double lambda = 2.0 * cE * dE;
                bool use_f = has_forces[c] && wF > 0;
                bool use_s = has_stress[c] && wS > 0;
                double cF = wF * inv_nc / N;
                double eta[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
                const double* F0 = &forces[3 * size_t(atom_offset[c])];
                if (use_f) {
                    double s = 0;
                    for (int k = 0; k < 3 * n; ++k) { double d = F[k] - F0[k]; s += d * d; }
                    L.forces += cF * s;
                }
                if (use_s) {
                    double V = volume[c];
                    double cS = wS * inv_nc * V * V / (N * N);
                    double s = 0;
                    for (int a = 0; a < 3; ++a)
                        for (int b = 0; b < 3; ++b) {
                            double S = 0.5 * (W[3 * a + b] + W[3 * b + a]) / V;
                            double d = S - stress[9 * size_t(c) + 3 * a + b];
                            s += d * d;
                            eta[3 * a + b] = 2.0 * cS * d / V;
                        }
                    L.stress += cS * s;
                }
                if (!want_grad) continue;
                // tangent directions per pair: delta = -(rho_j - rho_i) + eta r, rho = 2 cF (F - F0)
                if (Dv.size() < size_t(nb.n_pairs()) * 3) Dv.resize(size_t(nb.n_pairs()) * 3);
                double* delta = Dv.data();
                for (int i = 0; i < n; ++i)
                    for (int p = nb.start[i]; p < nb.start[i + 1]; ++p) {
                        double* dl = delta + size_t(p) * 3;
                        const double* r = &nb.vec[size_t(p) * 3];
                        int j = nb.jatom[p];
                        for (int a = 0; a < 3; ++a) {
                            double v = 0;
                            if (use_f) v -= 2.0 * cF * ((F[3 * j + a] - F0[3 * j + a]) - (F[3 * i + a] - F0[3 * i + a]));
                            if (use_s) v += eta[3 * a] * r[0] + eta[3 * a + 1] * r[1] + eta[3 * a + 2] * r[2];
                            dl[a] = v;
                        }
                    }
                const int* ty = &types[atom_offset[c]];
                Work& w = works[tid];
                const std::vector<double>& cc = cache[tid];
                double* g = &bgrad[size_t(blk) * P];
                for (int i = 0; i < n; ++i) {
                    int p0 = nb.start[i], nn = nb.start[i + 1] - p0;
                    w.reserve(B, nn);
                    site_geometry(B, theta, ty[i], nn, &nb.vec[size_t(p0) * 3], &nb.jtype[p0], w);
                    std::copy(cc.begin() + size_t(i) * 2 * B.n_moments, cc.begin() + size_t(i) * 2 * B.n_moments + B.n_moments, w.m.begin());
                    std::copy(cc.begin() + size_t(i) * 2 * B.n_moments + B.n_moments, cc.begin() + size_t(i + 1) * 2 * B.n_moments, w.ab.begin());
                    site_train(B, ty[i], nn, delta + size_t(p0) * 3, lambda, w, g);
                }
            }
        };
        parallel_for(n_blocks, n_threads, body);
        LossParts total;
        for (int b = 0; b < n_blocks; ++b) {
            total.energy += bloss[b].energy; total.forces += bloss[b].forces; total.stress += bloss[b].stress;
        }
        if (want_grad) {
            std::fill(grad, grad + P, 0.0);
            for (int b = 0; b < n_blocks; ++b)
                for (int k = 0; k < P; ++k) grad[k] += bgrad[size_t(b) * P + k];
        }
        return total;
    }

    // Predicted energies (n_configs), forces (3 per atom, concatenated) and stress (9 per config, eV/A^3).
    void predict(const Basis& B, const double* theta, int n_threads, double* E, double* F, double* S) {
        n_threads = std::max(1, n_threads);
        prepare_threads(n_threads);
        std::vector<std::vector<double>> wbuf(n_threads, std::vector<double>(9));
        parallel_for(n_configs, n_threads, [&](int tid, int c) {
            double* W = wbuf[tid].data();
            double* Fc = F + 3 * size_t(atom_offset[c]);
            E[c] = forward(B, theta, c, tid, false, Fc, W);
            double V = volume[c];
            for (int a = 0; a < 3; ++a)
                for (int b = 0; b < 3; ++b)
                    S[9 * size_t(c) + 3 * a + b] = V > 0 ? 0.5 * (W[3 * a + b] + W[3 * b + a]) / V : 0.0;
        });
    }

    // Normal equations of the loss in the linear coefficients (moment, species) with the radial ones fixed:
    // loss(phi) = phi' K phi - 2 h' phi + c0. K is n_linear x n_linear (row-major).
    double lls(const Basis& B, const double* theta, double wE, double wF, double wS, int n_threads, double* K,
               double* h) {
        n_threads = std::max(1, n_threads);
        prepare_threads(n_threads);
        const int s = B.n_scalar, nl = B.n_linear();
        const size_t by_memory = std::max<size_t>(1, LLS_BLOCK_BYTES / (sizeof(double) * size_t(nl) * nl));
        const int max_blocks = int(std::min<size_t>(LLS_MAX_BLOCKS, by_memory));
        const int per_block = std::max(1, (n_configs + max_blocks - 1) / max_blocks);
        const int n_blocks = (n_configs + per_block - 1) / per_block;
        std::vector<double> bK(size_t(n_blocks) * nl * nl, 0.0), bh(size_t(n_blocks) * nl, 0.0), bc(n_blocks, 0.0);
        std::vector<std::vector<double>> dbuf(n_threads), sbuf(n_threads);
        const double inv_nc = 1.0 / std::max(1, n_configs);
        parallel_for(n_blocks, n_threads, [&](int tid, int blk) {
            double* Kb = &bK[size_t(blk) * nl * nl];
            double* hb = &bh[size_t(blk) * nl];
            Work& w = works[tid];
            std::vector<double>& D = dbuf[tid];
            for (int c = blk * per_block; c < std::min(n_configs, (blk + 1) * per_block); ++c) {
                const Neighborhoods& nb = nbs[c];
                const int n = nb.n_atoms;
                const int* ty = &types[atom_offset[c]];
                bool use_f = has_forces[c] && wF > 0;
                bool use_s = has_stress[c] && wS > 0;
                // energy row e (nl); force design, column-major: Dc[a][3n] = d(sum_i B_a(i))/dx (force = -Dc xi);
                // virial design Wd[a][9]
                size_t need = size_t(nl) + size_t(3 * n) * s + 9 * size_t(s);
                if (D.size() < need) D.resize(need);
                std::fill(D.begin(), D.begin() + need, 0.0);
                double* e = D.data();
                double* Dc = e + nl;
                double* Wd = Dc + size_t(3 * n) * s;
                for (int i = 0; i < n; ++i) {
                    int p0 = nb.start[i], nn = nb.start[i + 1] - p0;
                    w.reserve(B, nn);
                    site_geometry(B, theta, ty[i], nn, &nb.vec[size_t(p0) * 3], &nb.jtype[p0], w);
                    site_moments(B, theta, ty[i], nn, w);
                    for (int a = 0; a < s; ++a) e[a] += w.m[B.mapping[a]];
                    e[s + ty[i]] += 1.0;
                    if (!use_f && !use_s) continue;
                    const int* jat = &nb.jatom[p0];
                    const double* rv = &nb.vec[size_t(p0) * 3];
                    constexpr int NB = 64;  // neighbours per forward-mode block
                    for (int q0 = 0; q0 < nn; q0 += NB) {
                        const int q1 = std::min(nn, q0 + NB), nq = q1 - q0;
                        site_moment_gradients(B, q0, q1, w);
                        for (int a = 0; a < s; ++a) {
                            const double* Gx = &w.G[size_t(B.mapping[a]) * nq * 3];
                            const double* Gy = Gx + nq;
                            const double* Gz = Gy + nq;
                            double* col = Dc + size_t(a) * 3 * n;
                            double sx = 0, sy = 0, sz = 0;
                            for (int q = 0; q < nq; ++q) {
                                double* cj = col + 3 * jat[q0 + q];
                                cj[0] += Gx[q]; cj[1] += Gy[q]; cj[2] += Gz[q];
                                sx += Gx[q]; sy += Gy[q]; sz += Gz[q];
                            }
                            col[3 * i] -= sx; col[3 * i + 1] -= sy; col[3 * i + 2] -= sz;  // d/dx_i = -sum d/dr_n
                            if (use_s) {
                                double* wa = Wd + size_t(a) * 9;
                                for (int q = 0; q < nq; ++q) {
                                    const double* r = rv + 3 * (q0 + q);
                                    const double d3[3] = {Gx[q], Gy[q], Gz[q]};
                                    for (int k = 0; k < 3; ++k)
                                        for (int l = 0; l < 3; ++l) wa[3 * k + l] += r[k] * d3[l];
                                }
                            }
                        }
                    }
                }
                // normal equations, upper triangle only (mirrored after the reduction)
                const double N = n;
                double cE = wE * inv_nc / (N * N);
                for (int a = 0; a < nl; ++a) {
                    if (e[a] == 0.0) continue;
                    const double ea = cE * e[a];
                    for (int b = a; b < nl; ++b) Kb[size_t(a) * nl + b] += ea * e[b];
                    hb[a] += ea * energy[c];
                }
                bc[blk] += cE * energy[c] * energy[c];
                if (use_f) {
                    const double cF = wF * inv_nc / N;
                    const double* F0 = &forces[3 * size_t(atom_offset[c])];
                    add_gram(s, 3 * n, Dc, F0, cF, Kb, nl, hb, -1.0);  // force = -Dc xi
                    double acc = 0.0;
                    for (int r = 0; r < 3 * n; ++r) acc += F0[r] * F0[r];
                    bc[blk] += cF * acc;
                }
                if (use_s) {
                    const double V = volume[c];
                    const double cS = wS * inv_nc * V * V / (N * N);
                    std::vector<double>& srow = sbuf[tid];
                    srow.assign(size_t(9) * s, 0.0);
                    for (int a = 0; a < s; ++a)
                        for (int k = 0; k < 3; ++k)
                            for (int l = 0; l < 3; ++l)
                                srow[size_t(3 * k + l) * s + a] =
                                    0.5 * (Wd[size_t(a) * 9 + 3 * k + l] + Wd[size_t(a) * 9 + 3 * l + k]) / V;
                    for (int kl = 0; kl < 9; ++kl) {
                        const double* sr = &srow[size_t(kl) * s];
                        const double S0 = stress[9 * size_t(c) + kl];
                        for (int a = 0; a < s; ++a) {
                            const double ra = cS * sr[a];
                            if (ra == 0.0) continue;
                            for (int b = a; b < s; ++b) Kb[size_t(a) * nl + b] += ra * sr[b];
                            hb[a] += ra * S0;
                        }
                        bc[blk] += cS * S0 * S0;
                    }
                }
            }
        });
        std::fill(K, K + size_t(nl) * nl, 0.0);
        std::fill(h, h + nl, 0.0);
        double c0 = 0;
        for (int b = 0; b < n_blocks; ++b) {
            for (size_t k = 0; k < size_t(nl) * nl; ++k) K[k] += bK[size_t(b) * nl * nl + k];
            for (int k = 0; k < nl; ++k) h[k] += bh[size_t(b) * nl + k];
            c0 += bc[b];
        }
        for (int a = 0; a < nl; ++a)
            for (int b = 0; b < a; ++b) K[size_t(a) * nl + b] = K[size_t(b) * nl + a];
        return c0;
    }
};

}  // namespace alkit
