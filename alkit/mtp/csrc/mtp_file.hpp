// Reading MLIP-2 .mtp files and alkit active-set files in C++ (for the LAMMPS plugin; Python has its own reader
// in alkit/mtp/potential.py, and both are tested on the same files). No dependency beyond the standard library.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mtp_core.hpp"

namespace alkit {

struct MTPFile {
    Basis basis;
    std::vector<double> theta;  // motep order: moment, species, radial
    std::string potential_tag;
    std::vector<std::string> tag_species;  // from an alkit tag ("alkit_L16_Ti_H"), empty otherwise
};

namespace detail {

inline std::string trim(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
    while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
    return s.substr(a, b - a);
}

inline std::vector<double> numbers(const std::string& text, const std::string& what) {
    std::string t = trim(text);
    if (t.size() < 2 || t.front() != '{' || t.back() != '}') throw std::invalid_argument(what + " is not a {...} list");
    t = t.substr(1, t.size() - 2);
    std::vector<double> out;
    std::stringstream ss(t);
    std::string item;
    while (std::getline(ss, item, ',')) {
        item = trim(item);
        if (item.empty()) continue;
        size_t pos = 0;
        double v;
        try {
            v = std::stod(item, &pos);
        } catch (const std::exception&) {
            throw std::invalid_argument(what + ": '" + item + "' is not a number");
        }
        if (pos != item.size()) throw std::invalid_argument(what + ": '" + item + "' is not a number");
        out.push_back(v);
    }
    return out;
}

inline std::vector<int> int_rows(const std::string& text, const std::string& what) {
    std::string t = trim(text);
    if (t.size() < 2 || t.front() != '{' || t.back() != '}') throw std::invalid_argument(what + " is not a {...} list");
    std::vector<int> out;
    size_t i = 1;
    while (i < t.size() - 1) {
        size_t a = t.find('{', i);
        if (a == std::string::npos || a >= t.size() - 1) break;
        size_t b = t.find('}', a);
        if (b == std::string::npos) throw std::invalid_argument(what + ": unbalanced braces");
        std::vector<double> row = numbers(t.substr(a, b - a + 1), what);
        if (row.size() != 4) throw std::invalid_argument(what + " entries must have 4 integers");
        for (double v : row) out.push_back(int(v));
        i = b + 1;
    }
    return out;
}

inline int to_int(const std::string& v, const std::string& key) {
    size_t pos = 0;
    int x;
    try {
        x = std::stoi(v, &pos);
    } catch (const std::exception&) {
        throw std::invalid_argument(key + " = '" + v + "' is not an integer");
    }
    if (pos != v.size()) throw std::invalid_argument(key + " = '" + v + "' is not an integer");
    return x;
}

inline double to_double(const std::string& v, const std::string& key) {
    size_t pos = 0;
    double x;
    try {
        x = std::stod(v, &pos);
    } catch (const std::exception&) {
        throw std::invalid_argument(key + " = '" + v + "' is not a number");
    }
    if (pos != v.size()) throw std::invalid_argument(key + " = '" + v + "' is not a number");
    return x;
}

}  // namespace detail

// Parse the text of an .mtp file (MLIP-2's flat spelling or motep's grouped min/max/size). Throws
// std::invalid_argument with a short reason for anything missing, inconsistent or non-finite.
inline MTPFile parse_mtp(const std::string& text) {
    using namespace detail;
    std::vector<std::string> lines;
    {
        std::stringstream ss(text);
        std::string l;
        while (std::getline(ss, l)) {
            if (!l.empty() && l.back() == '\r') l.pop_back();
            lines.push_back(l);
        }
    }
    if (lines.empty() || trim(lines[0]) != "MTP") throw std::invalid_argument("not an MLIP-2 .mtp file (no 'MTP' line)");
    int spc = -1, rfc = -1, rbs = -1, amc = -1;
    double rmin = NAN, rmax = NAN, scaling = 1.0;
    std::vector<int> basic, times, mapping_i;
    std::vector<double> species_coeffs, moment_coeffs, radial;
    bool have_basic = false, have_times = false, have_map = false, have_radial = false;
    MTPFile out;
    for (size_t k = 1; k < lines.size(); ++k) {
        std::string line = trim(lines[k]);
        if (line.empty()) continue;
        if (line == "radial_coeffs") {
            if (spc < 1 || rfc < 1 || rbs < 1) throw std::invalid_argument("radial_coeffs come before the radial basis sizes");
            radial.assign(size_t(spc) * spc * rfc * rbs, 0.0);
            for (int pair = 0; pair < spc * spc; ++pair) {
                ++k;
                while (k < lines.size() && trim(lines[k]).empty()) ++k;
                if (k >= lines.size()) throw std::invalid_argument("radial_coeffs end early");
                std::string head = trim(lines[k]);
                size_t dash = head.find('-');
                if (dash == std::string::npos) throw std::invalid_argument("expected a species pair like '0-1', got '" + head + "'");
                int a = to_int(trim(head.substr(0, dash)), "species pair"), b = to_int(trim(head.substr(dash + 1)), "species pair");
                if (a < 0 || b < 0 || a >= spc || b >= spc) throw std::invalid_argument("radial_coeffs pair " + head + " is outside species_count");
                for (int mu = 0; mu < rfc; ++mu) {
                    ++k;
                    if (k >= lines.size()) throw std::invalid_argument("radial_coeffs end early");
                    std::vector<double> row = numbers(lines[k], "radial_coeffs " + head);
                    if (int(row.size()) != rbs) throw std::invalid_argument("radial_coeffs " + head + " row has the wrong length");
                    for (int b2 = 0; b2 < rbs; ++b2) radial[((size_t(a) * spc + b) * rfc + mu) * rbs + b2] = row[b2];
                }
            }
            have_radial = true;
            continue;
        }
        size_t eq = line.find('=');
        if (eq == std::string::npos) throw std::invalid_argument("unexpected line '" + line + "'");
        std::string key = trim(line.substr(0, eq)), val = trim(line.substr(eq + 1));
        if (key == "min") key = "min_dist";
        if (key == "max") key = "max_dist";
        if (key == "size") key = "radial_basis_size";
        if (key == "species_count") spc = to_int(val, key);
        else if (key == "radial_funcs_count") rfc = to_int(val, key);
        else if (key == "radial_basis_size") rbs = to_int(val, key);
        else if (key == "alpha_moments_count") amc = to_int(val, key);
        else if (key == "min_dist") rmin = to_double(val, key);
        else if (key == "max_dist") rmax = to_double(val, key);
        else if (key == "scaling") scaling = to_double(val, key);
        else if (key == "alpha_index_basic") { basic = int_rows(val, key); have_basic = true; }
        else if (key == "alpha_index_times") { times = int_rows(val, key); have_times = true; }
        else if (key == "alpha_moment_mapping") {
            for (double v : numbers(val, key)) mapping_i.push_back(int(v));
            have_map = true;
        }
        else if (key == "species_coeffs") species_coeffs = numbers(val, key);
        else if (key == "moment_coeffs") moment_coeffs = numbers(val, key);
        else if (key == "potential_tag") out.potential_tag = val;
        else if (key == "radial_basis_type") {
            if (val != "RBChebyshev") throw std::invalid_argument("radial_basis_type " + val + " is not supported");
        }
        else if (key == "alpha_index_basic_count" || key == "alpha_index_times_count" ||
                 key == "alpha_scalar_moments" || key == "version" || key == "potential_name") {
            // counts are checked against the lists below; names are informative
            if (key == "alpha_index_basic_count" && have_basic && to_int(val, key) * 4 != int(basic.size()))
                throw std::invalid_argument("alpha_index_basic_count does not match alpha_index_basic");
        }
        else if (key.rfind("magnetic", 0) == 0) throw std::invalid_argument("magnetic MTPs are not supported");
        else throw std::invalid_argument("unknown field '" + key + "'");
    }
    if (spc < 1 || rfc < 1 || rbs < 1 || amc < 0 || !std::isfinite(rmin) || !std::isfinite(rmax) || !have_basic ||
        !have_times || !have_map)
        throw std::invalid_argument("it lacks a required field (species_count, radial basis, alpha_* lists)");
    if (!have_radial || species_coeffs.empty() || moment_coeffs.empty())
        throw std::invalid_argument("it is untrained (no radial_coeffs, species_coeffs or moment_coeffs)");
    if (int(species_coeffs.size()) != spc) throw std::invalid_argument("species_coeffs do not match species_count");
    if (moment_coeffs.size() != mapping_i.size()) throw std::invalid_argument("moment_coeffs do not match alpha_moment_mapping");
    out.basis.build(spc, rfc, rbs, rmin, rmax, scaling, amc, basic.data(), int(basic.size() / 4), times.data(),
                    int(times.size() / 4), mapping_i.data(), int(mapping_i.size()));
    out.theta = moment_coeffs;
    out.theta.insert(out.theta.end(), species_coeffs.begin(), species_coeffs.end());
    out.theta.insert(out.theta.end(), radial.begin(), radial.end());
    for (double v : out.theta)
        if (!std::isfinite(v)) throw std::invalid_argument("it has non-finite coefficients");
    // alkit's tag: alkit_Lnn_El1_El2...
    const std::string& tag = out.potential_tag;
    if (tag.rfind("alkit_L", 0) == 0) {
        std::vector<std::string> parts;
        std::stringstream ss(tag);
        std::string p;
        while (std::getline(ss, p, '_')) parts.push_back(p);
        if (parts.size() >= 3 && int(parts.size()) - 2 == spc) out.tag_species.assign(parts.begin() + 2, parts.end());
    }
    return out;
}

// CRC-32 (IEEE, as zlib.crc32) of a byte string: the active-set file names the potential it belongs to by it.
inline uint32_t crc32(const std::string& data) {
    static uint32_t table[256];
    static bool init = false;
    if (!init) {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        init = true;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char ch : data) c = table[(c ^ ch) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

}  // namespace alkit
