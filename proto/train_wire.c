/* train_wire.c: OptimizerSpec and TableSpec messages to and from train_spec.h's
 * structs (see train_wire.h). */
#include "train_wire.h"

#include <string.h>

void train_wire_optim_from_msg(const Ps__OptimizerSpec *m, optim_spec *ret) {
    memset(ret, 0, sizeof *ret);
    if (!m)
        return;
    ret->kind = (optim_kind)m->kind;
    ret->lr = m->lr;
    ret->momentum = m->momentum;
    ret->weight_decay = m->weight_decay;
    ret->beta1 = m->beta1;
    ret->beta2 = m->beta2;
    ret->eps = m->eps;
    ret->initial_accumulator = m->initial_accumulator;
    ret->l1 = m->l1;
    ret->l2 = m->l2;
    ret->beta = m->beta;
}

void train_wire_optim_to_msg(const optim_spec *s, Ps__OptimizerSpec *m) {
    ps__optimizer_spec__init(m);
    m->kind = (Ps__OptimizerKind)s->kind;
    m->lr = s->lr;
    m->momentum = s->momentum;
    m->weight_decay = s->weight_decay;
    m->beta1 = s->beta1;
    m->beta2 = s->beta2;
    m->eps = s->eps;
    m->initial_accumulator = s->initial_accumulator;
    m->l1 = s->l1;
    m->l2 = s->l2;
    m->beta = s->beta;
}

void train_wire_table_from_msg(const Ps__TableSpec *m, table_spec *ret) {
    memset(ret, 0, sizeof *ret);
    if (!m)
        return;
    ret->dim = m->dim;
    ret->init = (table_init_kind)m->init;
    ret->init_scale = m->init_scale;
    ret->seed = m->seed;
    ret->optimizer = (optim_kind)m->optimizer;
}

void train_wire_table_to_msg(const table_spec *s, Ps__TableSpec *m) {
    ps__table_spec__init(m);
    m->dim = s->dim;
    m->init = (Ps__InitKind)s->init;
    m->init_scale = s->init_scale;
    m->seed = s->seed;
    m->optimizer = (Ps__OptimizerKind)s->optimizer;
}
