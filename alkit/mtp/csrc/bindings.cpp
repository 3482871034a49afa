// Python bindings of alkit's MTP core (module alkit.mtp._core). The GIL is released during every computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "mtp_engine.hpp"

namespace py = pybind11;
using namespace alkit;

using darr = py::array_t<double, py::array::c_style | py::array::forcecast>;
using iarr = py::array_t<int, py::array::c_style | py::array::forcecast>;
using barr = py::array_t<bool, py::array::c_style | py::array::forcecast>;

namespace {

void check_shape(const py::array& a, std::vector<py::ssize_t> shape, const char* what) {
    bool ok = a.ndim() == py::ssize_t(shape.size());
    for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
    if (!ok) throw std::invalid_argument(std::string(what) + " has the wrong shape");
}

void check_theta(const Basis& B, const darr& theta) {
    if (theta.ndim() != 1 || theta.shape(0) != B.n_params())
        throw std::invalid_argument("parameter vector has " + std::to_string(theta.size()) + " entries, the potential " +
                                    std::to_string(B.n_params()));
}

void check_types(const Basis& B, const iarr& types, py::ssize_t n) {
    check_shape(types, {n}, "types");
    const int* t = types.data();
    for (py::ssize_t i = 0; i < n; ++i)
        if (t[i] < 0 || t[i] >= B.n_species) throw std::invalid_argument("atom type out of range");
}

struct PyCalculator {
    std::shared_ptr<Basis> basis;
    StructureCalculator calc;

    py::dict compute(const darr& theta, const darr& pos, const darr& cell, const barr& pbc, const iarr& types,
                     int n_threads, int rows, bool forces) {
        const Basis& B = *basis;
        check_theta(B, theta);
        check_shape(pos, {-1, 3}, "positions");
        check_shape(cell, {3, 3}, "cell");
        check_shape(pbc, {3}, "pbc");
        const py::ssize_t n = pos.shape(0);
        check_types(B, types, n);
        if (rows < 0 || rows > 2) throw std::invalid_argument("rows must be 0 (none), 1 (linear) or 2 (all)");
        const int width = row_width(B, rows);
        darr energies(n), F({n, py::ssize_t(3)}), W({3, 3});
        darr R(rows ? std::vector<py::ssize_t>{n, width} : std::vector<py::ssize_t>{0, 0});
        double* pe = energies.mutable_data();
        double* pf = forces ? F.mutable_data() : nullptr;
        double* pw = W.mutable_data();
        double* pr = rows ? R.mutable_data() : nullptr;
        double energy = 0, mind = INFINITY;
        {
            py::gil_scoped_release nogil;
            calc.update(B, int(n), pos.data(), cell.data(), pbc.data(), types.data());
            calc.ev.evaluate(B, theta.data(), calc.nb, types.data(), n_threads, rows, pe, pf, pw, pr);
            for (py::ssize_t i = 0; i < n; ++i) energy += pe[i];
            mind = calc.nb.min_distance;
        }
        py::dict out;
        out["energy"] = energy;
        out["energies"] = energies;
        if (forces) out["forces"] = F;
        out["virial"] = W;
        if (rows) out["rows"] = R;
        out["min_distance"] = mind;
        out["n_pairs"] = calc.nb.n_pairs();
        return out;
    }
};

struct PyTrainingSet {
    std::shared_ptr<Basis> basis;
    TrainingSet ts;

    PyTrainingSet(std::shared_ptr<Basis> b, py::list structures) : basis(std::move(b)) {
        const Basis& B = *basis;
        ts.n_configs = int(py::len(structures));
        ts.nbs.resize(ts.n_configs);
        ts.atom_offset.assign(ts.n_configs + 1, 0);
        ts.energy.assign(ts.n_configs, 0);
        ts.stress.assign(9 * size_t(ts.n_configs), 0);
        ts.volume.assign(ts.n_configs, 0);
        ts.has_forces.assign(ts.n_configs, 0);
        ts.has_stress.assign(ts.n_configs, 0);
        // gather inputs with the GIL, build neighbour lists without it
        std::vector<darr> P, C, Fs;
        std::vector<barr> PB;
        std::vector<iarr> T;
        for (int c = 0; c < ts.n_configs; ++c) {
            py::tuple item = structures[c].cast<py::tuple>();
            if (item.size() != 7)
                throw std::invalid_argument("a structure is (positions, cell, pbc, types, energy, forces|None, stress|None)");
            darr pos = item[0].cast<darr>(), cell = item[1].cast<darr>();
            barr pbc = item[2].cast<barr>();
            iarr ty = item[3].cast<iarr>();
            check_shape(pos, {-1, 3}, "positions");
            check_shape(cell, {3, 3}, "cell");
            check_shape(pbc, {3}, "pbc");
            py::ssize_t n = pos.shape(0);
            if (n == 0) throw std::invalid_argument("structure " + std::to_string(c) + " has no atoms");
            check_types(B, ty, n);
            ts.atom_offset[c + 1] = ts.atom_offset[c] + int(n);
            ts.energy[c] = item[4].cast<double>();
            if (!item[5].is_none()) {
                darr f = item[5].cast<darr>();
                check_shape(f, {n, 3}, "forces");
                Fs.push_back(f);
                ts.has_forces[c] = 1;
            } else {
                Fs.push_back(darr({n, py::ssize_t(3)}));
                std::fill(Fs.back().mutable_data(), Fs.back().mutable_data() + 3 * n, 0.0);
            }
            if (!item[6].is_none()) {
                darr s = item[6].cast<darr>();
                check_shape(s, {3, 3}, "stress");
                std::copy(s.data(), s.data() + 9, ts.stress.begin() + 9 * size_t(c));
                ts.has_stress[c] = 1;
            }
            ts.volume[c] = std::fabs(det3(cell.data()));
            P.push_back(pos); C.push_back(cell); PB.push_back(pbc); T.push_back(ty);
            ts.max_atoms = std::max(ts.max_atoms, int(n));
        }
        ts.types.resize(ts.atom_offset[ts.n_configs]);
        ts.forces.resize(3 * size_t(ts.atom_offset[ts.n_configs]));
        for (int c = 0; c < ts.n_configs; ++c) {
            std::copy(T[c].data(), T[c].data() + T[c].size(), ts.types.begin() + ts.atom_offset[c]);
            std::copy(Fs[c].data(), Fs[c].data() + Fs[c].size(), ts.forces.begin() + 3 * size_t(ts.atom_offset[c]));
        }
        {
            py::gil_scoped_release nogil;
            NeighborList nl;
            for (int c = 0; c < ts.n_configs; ++c) {
                int n = ts.atom_offset[c + 1] - ts.atom_offset[c];
                build_neighbors(n, P[c].data(), C[c].data(), PB[c].data(), B.rmax, nl);
                compact_neighbors(nl, P[c].data(), C[c].data(), T[c].data(), B.rmax, B.n_species, ts.nbs[c]);
                // stress only where the cell is fully periodic
                const bool* pb = PB[c].data();
                if (!(pb[0] && pb[1] && pb[2])) ts.has_stress[c] = 0;
            }
        }
        ts.atom_offset.pop_back();
    }

    py::tuple loss_grad(const darr& theta, std::vector<double> w, int n_threads, bool want_grad) {
        const Basis& B = *basis;
        check_theta(B, theta);
        if (w.size() != 3) throw std::invalid_argument("weights are (energy, forces, stress)");
        darr grad(want_grad ? B.n_params() : 0);
        LossParts L;
        {
            py::gil_scoped_release nogil;
            L = ts.loss_grad(B, theta.data(), w[0], w[1], w[2], n_threads, want_grad ? grad.mutable_data() : nullptr,
                             want_grad);
        }
        py::dict parts;
        parts["energy"] = L.energy; parts["forces"] = L.forces; parts["stress"] = L.stress;
        if (want_grad) return py::make_tuple(L.total(), grad, parts);
        return py::make_tuple(L.total(), py::none(), parts);
    }

    py::tuple predict(const darr& theta, int n_threads) {
        const Basis& B = *basis;
        check_theta(B, theta);
        darr E(ts.n_configs), F({py::ssize_t(ts.n_atoms_total()), py::ssize_t(3)}), S({py::ssize_t(ts.n_configs), py::ssize_t(3), py::ssize_t(3)});
        {
            py::gil_scoped_release nogil;
            ts.predict(B, theta.data(), n_threads, E.mutable_data(), F.mutable_data(), S.mutable_data());
        }
        return py::make_tuple(E, F, S);
    }

    py::tuple lls(const darr& theta, std::vector<double> w, int n_threads) {
        const Basis& B = *basis;
        check_theta(B, theta);
        if (w.size() != 3) throw std::invalid_argument("weights are (energy, forces, stress)");
        const int nl = B.n_linear();
        darr K({nl, nl}), h(nl);
        double c0;
        {
            py::gil_scoped_release nogil;
            c0 = ts.lls(B, theta.data(), w[0], w[1], w[2], n_threads, K.mutable_data(), h.mutable_data());
        }
        return py::make_tuple(K, h, c0);
    }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "alkit's compiled MTP core: energies, forces, stress, grade rows, training loss and gradient";

    py::class_<Basis, std::shared_ptr<Basis>>(m, "Basis")
        .def(py::init([](int species_count, int radial_funcs_count, int radial_basis_size, double min_dist,
                         double max_dist, double scaling, int alpha_moments_count, const iarr& basic,
                         const iarr& times, const iarr& mapping) {
                 auto b = std::make_shared<Basis>();
                 if (basic.size() && (basic.ndim() != 2 || basic.shape(1) != 4))
                     throw std::invalid_argument("alpha_index_basic must be (n, 4)");
                 if (times.size() && (times.ndim() != 2 || times.shape(1) != 4))
                     throw std::invalid_argument("alpha_index_times must be (n, 4)");
                 b->build(species_count, radial_funcs_count, radial_basis_size, min_dist, max_dist, scaling,
                          alpha_moments_count, basic.data(), int(basic.size() / 4), times.data(),
                          int(times.size() / 4), mapping.data(), int(mapping.size()));
                 return b;
             }),
             py::arg("species_count"), py::arg("radial_funcs_count"), py::arg("radial_basis_size"),
             py::arg("min_dist"), py::arg("max_dist"), py::arg("scaling"), py::arg("alpha_moments_count"),
             py::arg("alpha_index_basic"), py::arg("alpha_index_times"), py::arg("alpha_moment_mapping"))
        .def_property_readonly("n_params", &Basis::n_params)
        .def_property_readonly("n_linear", &Basis::n_linear)
        .def_property_readonly("n_radial", &Basis::n_radial)
        .def_property_readonly("n_scalar", [](const Basis& b) { return b.n_scalar; })
        .def_property_readonly("n_species", [](const Basis& b) { return b.n_species; })
        .def_property_readonly("n_moments", [](const Basis& b) { return b.n_moments; })
        .def_property_readonly("n_basic", [](const Basis& b) { return b.n_basic; })
        .def_property_readonly("n_monomials", [](const Basis& b) { return b.n_mono; })
        .def_property_readonly("cutoff", [](const Basis& b) { return b.rmax; })
        .def_property_readonly("min_dist", [](const Basis& b) { return b.rmin; });

    py::class_<PyCalculator>(m, "Calculator")
        .def(py::init([](std::shared_ptr<Basis> b, double skin) {
                 if (!(skin >= 0)) throw std::invalid_argument("skin must be >= 0");
                 auto c = new PyCalculator();
                 c->basis = std::move(b);
                 c->calc.skin = skin;
                 return c;
             }),
             py::arg("basis"), py::arg("skin") = 1.0)
        .def("compute", &PyCalculator::compute, py::arg("theta"), py::arg("positions"), py::arg("cell"),
             py::arg("pbc"), py::arg("types"), py::arg("n_threads") = 1, py::arg("rows") = 0,
             py::arg("forces") = true)
        .def_property_readonly("n_builds", [](const PyCalculator& c) { return c.calc.n_builds; });

    py::class_<PyTrainingSet>(m, "TrainingSet")
        .def(py::init<std::shared_ptr<Basis>, py::list>(), py::arg("basis"), py::arg("structures"))
        .def("loss_grad", &PyTrainingSet::loss_grad, py::arg("theta"), py::arg("weights"), py::arg("n_threads") = 1,
             py::arg("gradient") = true)
        .def("predict", &PyTrainingSet::predict, py::arg("theta"), py::arg("n_threads") = 1)
        .def("lls", &PyTrainingSet::lls, py::arg("theta"), py::arg("weights"), py::arg("n_threads") = 1)
        .def_property_readonly("n_configs", [](const PyTrainingSet& t) { return t.ts.n_configs; })
        .def_property_readonly("n_atoms", [](const PyTrainingSet& t) { return t.ts.n_atoms_total(); })
        .def_property_readonly("n_pairs", [](const PyTrainingSet& t) {
            long s = 0;
            for (auto& nb : t.ts.nbs) s += nb.n_pairs();
            return s;
        })
        .def_property_readonly("min_distance", [](const PyTrainingSet& t) {
            double d = INFINITY;
            for (auto& nb : t.ts.nbs) d = std::min(d, nb.min_distance);
            return d;
        });

    m.def("neighbors", [](const darr& pos, const darr& cell, const barr& pbc, double rc) {
        check_shape(pos, {-1, 3}, "positions");
        check_shape(cell, {3, 3}, "cell");
        check_shape(pbc, {3}, "pbc");
        NeighborList nl;
        {
            py::gil_scoped_release nogil;
            build_neighbors(int(pos.shape(0)), pos.data(), cell.data(), pbc.data(), rc, nl);
        }
        py::ssize_t np_ = nl.n_pairs();
        iarr I(np_), J(np_), S({np_, py::ssize_t(3)});
        darr V({np_, py::ssize_t(3)});
        for (int i = 0; i < nl.n_atoms; ++i)
            for (int p = nl.start[i]; p < nl.start[i + 1]; ++p) I.mutable_data()[p] = i;
        std::copy(nl.jatom.begin(), nl.jatom.end(), J.mutable_data());
        std::copy(nl.shift.begin(), nl.shift.end(), S.mutable_data());
        std::copy(nl.vec.begin(), nl.vec.end(), V.mutable_data());
        return py::make_tuple(I, J, S, V);
    }, py::arg("positions"), py::arg("cell"), py::arg("pbc"), py::arg("cutoff"),
       "Full neighbour list (i, j, image shifts, vectors r_j + shift.cell - r_i) within cutoff.");
}
