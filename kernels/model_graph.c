/* model_graph.c: passes of small batches as graphs (CUDA graphs) on a device backend
 * that records them (backend.h, "Graphs").
 *
 * Why it is built this way: at small batches a pass costs its op launches more than
 * its arithmetic, and a graph replays every op of a pass for one launch. What a
 * recording bakes in must stay true for every replay of it, so a graph is made per
 * workspace (its arena's addresses) and per batch size up to MODEL_GRAPH_MAX_BATCH,
 * holding only the layers: a pass's inputs, int masks and table rows are uploaded into
 * the arena before it and its outputs downloaded after, each pass, and parameters are
 * read from their device mirrors when the replay runs (model_params_sync changes
 * their contents, never their addresses). A model with a layer that hands an op host
 * ids (embedding, embedding_bag: read at record time) is never recorded. The first
 * pass of a size runs eagerly (the backend makes its handles and picks its algorithms
 * then, outside any recording), the second records and launches, the later ones
 * launch. A backend without graphs, or a recording that failed or cannot be replayed,
 * makes that size run eagerly from then on (the failed pass too: nothing of a failed
 * recording ran).
 */
#include "model_internal.h"
#include "util.h"

#include <string.h>

/* Where a workspace stands with a batch size (graph_state). */
enum {
    GRAPH_UNSEEN = 0, /* no pass of that size yet */
    GRAPH_WARM,       /* one eager pass done: the next records */
    GRAPH_HELD,       /* graphs[batch] replays the pass */
    GRAPH_NEVER,      /* the backend cannot: eager passes only */
};

void model_graph_plan(model *m) {
    m->graphable = m->device;
    for (size_t l = 0; l < m->n_layers; l++) {
        const model_config_op op = m->layers[l].op;
        if (op == MODEL_CONFIG_OP_EMBEDDING || op == MODEL_CONFIG_OP_EMBEDDING_BAG) {
            m->graphable = false; /* their ids are host memory, read at record time */
        }
    }
}

/* Records the layers of a pass of `batch` into ws->graphs[batch] (nothing runs): HELD
 * when it worked, else NEVER (the backend cannot, or the recording failed: the caller
 * then runs the pass eagerly, where a fault of its own shows). */
static void record(const model *m, model_workspace *ws, size_t batch) {
    ws->graph_state[batch] = GRAPH_NEVER;
    if (kernels_stream_capture_begin(ws->stream) != PS_STATUS_OK) {
        return;
    }
    char why[256];
    const ps_status st = model_layers_run(m, ws, batch, why, sizeof(why));
    kernels_graph *g = NULL;
    const ps_status end = kernels_stream_capture_end(ws->stream, &g);
    if (st != PS_STATUS_OK || end != PS_STATUS_OK) {
        kernels_graph_destroy(g);
        return;
    }
    ws->graphs[batch] = g;
    ws->graph_state[batch] = GRAPH_HELD;
}

ps_status model_graph_run(const model *m, model_workspace *ws, size_t batch, char *err,
                          size_t err_len) {
    if (!m->graphable || batch > MODEL_GRAPH_MAX_BATCH || ws->graph_state[batch] == GRAPH_NEVER) {
        return model_layers_run(m, ws, batch, err, err_len);
    }
    if (ws->graph_state[batch] == GRAPH_UNSEEN) {
        ps_status st = model_layers_run(m, ws, batch, err, err_len);
        if (st == PS_STATUS_OK) {
            ws->graph_state[batch] = GRAPH_WARM;
        }
        return st;
    }
    if (ws->graph_state[batch] == GRAPH_WARM) {
        record(m, ws, batch);
        if (ws->graph_state[batch] != GRAPH_HELD) {
            return model_layers_run(m, ws, batch, err, err_len);
        }
    }
    for (size_t l = 0; l < m->n_layers; l++) { /* where the replay leaves each output */
        const size_t v = m->layers[l].output;
        ws->ptrs[v] = ws->arena + ws->batch_cap * m->values[v].slot;
    }
    ps_status st = kernels_graph_launch(ws->stream, ws->graphs[batch]);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "model %s: replaying the pass of batch %zu on %s: %s %s",
                   model_config_name(m->cfg), batch, kernels_backend_name(m->backend),
                   ps_status_str(st), kernels_stream_last_error(ws->stream));
    }
    return st;
}

void model_graph_ws_free(model_workspace *ws) {
    for (size_t b = 0; b <= MODEL_GRAPH_MAX_BATCH; b++) {
        kernels_graph_destroy(ws->graphs[b]);
        ws->graphs[b] = NULL;
    }
}
