/* train_wire.h: the wire forms of the training specs (ps.proto's OptimizerSpec and
 * TableSpec) to and from their C forms (ps/common/train_spec.h).
 *
 * Why it is here: shards read these messages and clients write them; one pair of
 * conversions keeps both sides reading the same fields the same way. The conversions
 * only copy; checking is optim_spec_check's and table_spec_check's job.
 */
#ifndef PS_PROTO_TRAIN_WIRE_H
#define PS_PROTO_TRAIN_WIRE_H

#include "ps.pb-c.h"
#include "train_spec.h"

/* A NULL message gives a spec of kind OPTIM_NONE (all zero). */
void train_wire_optim_from_msg(const Ps__OptimizerSpec *msg, optim_spec *ret_spec);
/* Fills msg (initialized here) from spec. */
void train_wire_optim_to_msg(const optim_spec *spec, Ps__OptimizerSpec *ret_msg);

/* A NULL message gives dim 0 (which table_spec_check refuses). */
void train_wire_table_from_msg(const Ps__TableSpec *msg, table_spec *ret_spec);
void train_wire_table_to_msg(const table_spec *spec, Ps__TableSpec *ret_msg);

#endif
