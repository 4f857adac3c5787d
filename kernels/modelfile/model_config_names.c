/* model_config_names.c: the indexes of a config's names by hash (model_config_internal.h):
 * values (model inputs, layer outputs) and parameters each have one, filled as the parser
 * adds them. Looking a name up while parsing layer 20,000 costs what it cost for layer
 * 1; a linear search over every name made checking a deep config quadratic (20,000
 * layers took seconds, each layer's inputs, outputs and parameters searched in turn). */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "model_config_internal.h"

static uint64_t name_hash(const char *name) {
    return XXH3_64bits(name, strlen(name));
}

/* The name of entry index of the index's kind. */
static const char *name_at(const model_config *cfg, const cfg_names *names, size_t index) {
    return names == &cfg->value_names ? cfg->values[index].name : cfg->params[index].name;
}

static ps_status grow(cfg_names *names) {
    size_t cap = names->cap ? names->cap * 2 : 64;
    uint64_t *hashes = calloc(cap, sizeof *hashes);
    size_t *slots = malloc(cap * sizeof *slots);
    if (!hashes || !slots) {
        free(hashes);
        free(slots);
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < cap; i++)
        slots[i] = SIZE_MAX;
    for (size_t i = 0; i < names->cap; i++) {
        if (names->slots[i] == SIZE_MAX)
            continue;
        size_t j = (size_t)names->hashes[i] & (cap - 1);
        while (slots[j] != SIZE_MAX)
            j = (j + 1) & (cap - 1);
        hashes[j] = names->hashes[i];
        slots[j] = names->slots[i];
    }
    free(names->hashes);
    free(names->slots);
    names->hashes = hashes;
    names->slots = slots;
    names->cap = cap;
    return PS_STATUS_OK;
}

ps_status cfg_names_add(model_config *cfg, cfg_names *names, size_t index) {
    if ((names->n + 1) * 2 > names->cap && grow(names) != PS_STATUS_OK)
        return PS_STATUS_NO_MEMORY;
    const char *name = name_at(cfg, names, index);
    uint64_t h = name_hash(name);
    size_t j = (size_t)h & (names->cap - 1);
    for (; names->slots[j] != SIZE_MAX; j = (j + 1) & (names->cap - 1))
        if (names->hashes[j] == h && strcmp(name_at(cfg, names, names->slots[j]), name) == 0)
            return PS_STATUS_OK; /* the first one added stands, as a search in order finds */
    names->hashes[j] = h;
    names->slots[j] = index;
    names->n++;
    return PS_STATUS_OK;
}

bool cfg_names_find(const model_config *cfg, const cfg_names *names, const char *name,
                    size_t *ret_index) {
    if (name == NULL || names->n == 0)
        return false;
    uint64_t h = name_hash(name);
    for (size_t j = (size_t)h & (names->cap - 1); names->slots[j] != SIZE_MAX;
         j = (j + 1) & (names->cap - 1)) {
        if (names->hashes[j] == h && strcmp(name_at(cfg, names, names->slots[j]), name) == 0) {
            if (ret_index != NULL)
                *ret_index = names->slots[j];
            return true;
        }
    }
    return false;
}

void cfg_names_free(cfg_names *names) {
    free(names->hashes);
    free(names->slots);
    memset(names, 0, sizeof *names);
}
